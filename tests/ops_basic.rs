//! Gradient (f64 finite differences) and curvature (naive f64 recursion) checks for the
//! elementwise, linear, loss, switch, mixed-op, structural and regularisation ops.

mod common;

use bayesnas_engine::prelude::*;
use common::*;

const FD_EPS: f64 = 1e-3;
const GRAD_RTOL: f64 = 2e-3;
const CURV_RTOL: f64 = 1e-4;

#[test]
fn relu_grad_and_curvature() {
    let mut rng = Rng::new(1);
    let shape = [2, 3, 5, 7];
    let n = 2 * 3 * 5 * 7;
    // keep values away from the kink so finite differences are exact
    let x: Vec<f64> = round32(&randn(n, &mut rng))
        .into_iter()
        .map(|v| if v.abs() < 0.05 { v + 0.1 } else { v })
        .collect();
    let loss = LossSpec::new(n, &mut rng);
    let mut tape = Tape::new();
    let xv = tape.leaf(tensor(&x, &shape));
    let y = tape.relu(xv).unwrap();
    let l = loss.record(&mut tape, y);
    let reference = |x: &[f64]| x.iter().map(|&v| v.max(0.0)).collect::<Vec<_>>();
    assert_close(
        "relu forward",
        &tape.value(y).to_vec(),
        &reference(&x),
        1e-6,
    );
    let g = tape.backward(l).unwrap();
    let fd = fd_grad(&|x| loss.eval(&reference(x)), &x, FD_EPS);
    assert_close("relu dx", &g.leaf(xv).unwrap().to_vec(), &fd, GRAD_RTOL);
    let h = tape.curvature_backward(l).unwrap();
    let want: Vec<f64> = x
        .iter()
        .zip(&loss.weights)
        .map(|(&v, &w)| if v > 0.0 { w } else { 0.0 })
        .collect();
    assert_close("relu hx", &h.leaf(xv).unwrap().to_vec(), &want, CURV_RTOL);
}

#[test]
fn sum_and_scale_grad_and_curvature() {
    let mut rng = Rng::new(2);
    let shape = [3, 4];
    let a = round32(&randn(12, &mut rng));
    let b = round32(&randn(12, &mut rng));
    let c = round32(&randn(12, &mut rng));
    let loss = LossSpec::new(12, &mut rng);
    let mut tape = Tape::new();
    let (av, bv, cv) = (
        tape.leaf(tensor(&a, &shape)),
        tape.leaf(tensor(&b, &shape)),
        tape.leaf(tensor(&c, &shape)),
    );
    let s = tape.sum(&[av, bv, cv]).unwrap();
    let y = tape.scale(s, -1.5).unwrap();
    let l = loss.record(&mut tape, y);
    let reference = |a: &[f64], b: &[f64], c: &[f64]| -> Vec<f64> {
        (0..12).map(|i| -1.5 * (a[i] + b[i] + c[i])).collect()
    };
    assert_close(
        "sum forward",
        &tape.value(y).to_vec(),
        &reference(&a, &b, &c),
        1e-6,
    );
    let g = tape.backward(l).unwrap();
    let fd = fd_grad(&|x| loss.eval(&reference(x, &b, &c)), &a, FD_EPS);
    assert_close("sum da", &g.leaf(av).unwrap().to_vec(), &fd, GRAD_RTOL);
    let fd = fd_grad(&|x| loss.eval(&reference(&a, &b, x)), &c, FD_EPS);
    assert_close("sum dc", &g.leaf(cv).unwrap().to_vec(), &fd, GRAD_RTOL);
    let h = tape.curvature_backward(l).unwrap();
    let want: Vec<f64> = loss.weights.iter().map(|w| w * 2.25).collect();
    for v in [av, bv, cv] {
        assert_close("sum h", &h.leaf(v).unwrap().to_vec(), &want, CURV_RTOL);
    }
}

/// A tensor consumed twice (fan-out) receives the sum of both branches' gradients and
/// curvatures.
#[test]
fn fan_out_accumulates() {
    let mut rng = Rng::new(3);
    let x = round32(&randn(10, &mut rng));
    let loss = LossSpec::new(10, &mut rng);
    let mut tape = Tape::new();
    let xv = tape.leaf(tensor(&x, &[10]));
    let r = tape.relu(xv).unwrap();
    let s = tape.scale(xv, 2.0).unwrap();
    let y = tape.add(r, s).unwrap();
    let l = loss.record(&mut tape, y);
    let reference = |x: &[f64]| x.iter().map(|&v| v.max(0.0) + 2.0 * v).collect::<Vec<_>>();
    let g = tape.backward(l).unwrap();
    let fd = fd_grad(&|x| loss.eval(&reference(x)), &x, FD_EPS);
    assert_close("fan-out dx", &g.leaf(xv).unwrap().to_vec(), &fd, GRAD_RTOL);
    let h = tape.curvature_backward(l).unwrap();
    // diagonal recursion: relu branch gives w*1[x>0], scale branch gives 4w, summed.
    let want: Vec<f64> = x
        .iter()
        .zip(&loss.weights)
        .map(|(&v, &w)| w * (if v > 0.0 { 1.0 } else { 0.0 } + 4.0))
        .collect();
    assert_close(
        "fan-out hx",
        &h.leaf(xv).unwrap().to_vec(),
        &want,
        CURV_RTOL,
    );
}

fn linear_ref(
    x: &[f64],
    w: &[f64],
    b: Option<&[f64]>,
    bsz: usize,
    din: usize,
    dout: usize,
) -> Vec<f64> {
    let mut y = vec![0.0; bsz * dout];
    for n in 0..bsz {
        for o in 0..dout {
            let mut s = b.map_or(0.0, |b| b[o]);
            for i in 0..din {
                s += x[n * din + i] * w[o * din + i];
            }
            y[n * dout + o] = s;
        }
    }
    y
}

#[test]
fn linear_grad_and_curvature() {
    let mut rng = Rng::new(4);
    let (bsz, din, dout) = (3, 7, 5);
    let x = round32(&randn(bsz * din, &mut rng));
    let w = round32(&randn(dout * din, &mut rng));
    let b = round32(&randn(dout, &mut rng));
    let loss = LossSpec::new(bsz * dout, &mut rng);
    let mut store = ParamStore::new();
    let wid = store.add("w", "weights", tensor(&w, &[dout, din])).unwrap();
    let bid = store.add("b", "weights", tensor(&b, &[dout])).unwrap();
    let mut tape = Tape::new();
    let xv = tape.leaf(tensor(&x, &[bsz, din]));
    let (wv, bv) = (tape.param(&store, wid), tape.param(&store, bid));
    let y = tape.linear(xv, wv, Some(bv)).unwrap();
    let l = loss.record(&mut tape, y);
    let yref = linear_ref(&x, &w, Some(&b), bsz, din, dout);
    assert_close("linear forward", &tape.value(y).to_vec(), &yref, 1e-5);
    let g = tape.backward(l).unwrap();
    let fd = fd_grad(
        &|x| loss.eval(&linear_ref(x, &w, Some(&b), bsz, din, dout)),
        &x,
        FD_EPS,
    );
    assert_close("linear dx", &g.leaf(xv).unwrap().to_vec(), &fd, GRAD_RTOL);
    let fd = fd_grad(
        &|w| loss.eval(&linear_ref(&x, w, Some(&b), bsz, din, dout)),
        &w,
        FD_EPS,
    );
    assert_close("linear dw", &g.param(wid).unwrap().to_vec(), &fd, GRAD_RTOL);
    let fd = fd_grad(
        &|b| loss.eval(&linear_ref(&x, &w, Some(b), bsz, din, dout)),
        &b,
        FD_EPS,
    );
    assert_close("linear db", &g.param(bid).unwrap().to_vec(), &fd, GRAD_RTOL);

    // naive recursion with hy = loss weights
    let hy = &loss.weights;
    let mut hx = vec![0.0; bsz * din];
    let mut hw = vec![0.0; dout * din];
    let mut hb = vec![0.0; dout];
    for n in 0..bsz {
        for o in 0..dout {
            let h = hy[n * dout + o];
            hb[o] += h;
            for i in 0..din {
                hx[n * din + i] += h * w[o * din + i].powi(2);
                hw[o * din + i] += h * x[n * din + i].powi(2);
            }
        }
    }
    let c = tape.curvature_backward(l).unwrap();
    assert_close("linear hx", &c.leaf(xv).unwrap().to_vec(), &hx, CURV_RTOL);
    assert_close("linear hw", &c.param(wid).unwrap().to_vec(), &hw, CURV_RTOL);
    assert_close("linear hb", &c.param(bid).unwrap().to_vec(), &hb, CURV_RTOL);
}

fn softmax_ce_ref(z: &[f64], labels: &[u32], k: usize) -> (f64, Vec<f64>) {
    let b = labels.len();
    let mut probs = vec![0.0; z.len()];
    let mut loss = 0.0;
    for n in 0..b {
        let row = &z[n * k..(n + 1) * k];
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        for i in 0..k {
            probs[n * k + i] = (row[i] - m).exp() / s;
        }
        loss += -(probs[n * k + labels[n] as usize]).ln();
    }
    (loss / b as f64, probs)
}

#[test]
fn cross_entropy_grad_and_curvature_seed() {
    let mut rng = Rng::new(5);
    let (b, k) = (4, 6);
    let z = round32(&randn(b * k, &mut rng));
    let labels = [0u32, 5, 2, 2];
    let mut tape = Tape::new();
    let zv = tape.leaf(tensor(&z, &[b, k]));
    let l = tape.cross_entropy(zv, &labels).unwrap();
    let (lref, probs) = softmax_ce_ref(&z, &labels, k);
    assert!((tape.value(l).item().unwrap() as f64 - lref).abs() < 1e-5);
    let g = tape.backward(l).unwrap();
    let fd = fd_grad(&|z| softmax_ce_ref(z, &labels, k).0, &z, FD_EPS);
    assert_close("ce dz", &g.leaf(zv).unwrap().to_vec(), &fd, GRAD_RTOL);
    // Curvature seed p(1-p)/B for every class equals the exact Hessian diagonal of the mean CE;
    // check against f64 second differences too.
    let h = tape.curvature_backward(l).unwrap();
    let seed: Vec<f64> = probs.iter().map(|p| p * (1.0 - p) / b as f64).collect();
    assert_close("ce hz", &h.leaf(zv).unwrap().to_vec(), &seed, CURV_RTOL);
    let e = 1e-3;
    let second: Vec<f64> = (0..z.len())
        .map(|i| {
            let mut zp = z.clone();
            zp[i] += e;
            let mut zm = z.clone();
            zm[i] -= e;
            (softmax_ce_ref(&zp, &labels, k).0 - 2.0 * lref + softmax_ce_ref(&zm, &labels, k).0)
                / (e * e)
        })
        .collect();
    assert_close(
        "ce hz vs second differences",
        &h.leaf(zv).unwrap().to_vec(),
        &second,
        1e-3,
    );
}

#[test]
fn cross_entropy_rejects_bad_labels() {
    let mut tape = Tape::new();
    let z = tape.leaf(Tensor::full(&[2, 3], 0.5));
    assert!(tape.cross_entropy(z, &[0, 3]).is_err());
    assert!(tape.cross_entropy(z, &[0]).is_err());
}

fn mixed_ref(xs: &[Vec<f64>], s: &[f64], s0: f64) -> Vec<f64> {
    (0..xs[0].len())
        .map(|j| s0 * xs.iter().zip(s).map(|(x, sk)| sk * x[j]).sum::<f64>())
        .collect()
}

#[test]
fn mixed_op_grads_per_sample_and_curvature() {
    let mut rng = Rng::new(6);
    let (n, c, h, w, k) = (3, 2, 4, 5, 4);
    let per = c * h * w;
    let shape = [n, c, h, w];
    let xs: Vec<Vec<f64>> = (0..k).map(|_| round32(&randn(n * per, &mut rng))).collect();
    let s = round32(&rand_uniform(k, 0.3, 1.5, &mut rng));
    let s0 = round32(&rand_uniform(1, 0.5, 1.5, &mut rng))[0];
    let loss = LossSpec::new(n * per, &mut rng);
    let mut tape = Tape::new();
    let xv: Vec<Var> = xs.iter().map(|x| tape.leaf(tensor(x, &shape))).collect();
    let sv = tape.leaf(tensor(&s, &[k]));
    let s0v = tape.leaf(tensor(&[s0], &[1]));
    let y = tape.mixed(&xv, sv, s0v).unwrap();
    let l = loss.record(&mut tape, y);
    let yref = mixed_ref(&xs, &s, s0);
    assert_close("mixed forward", &tape.value(y).to_vec(), &yref, 1e-5);
    let g = tape.backward(l).unwrap();
    for i in 0..k {
        let fd = fd_grad(
            &|x| {
                let mut xs2 = xs.clone();
                xs2[i] = x.to_vec();
                loss.eval(&mixed_ref(&xs2, &s, s0))
            },
            &xs[i],
            FD_EPS,
        );
        assert_close(
            "mixed dx_k",
            &g.leaf(xv[i]).unwrap().to_vec(),
            &fd,
            GRAD_RTOL,
        );
    }
    let fd = fd_grad(&|s| loss.eval(&mixed_ref(&xs, s, s0)), &s, FD_EPS);
    assert_close("mixed ds", &g.leaf(sv).unwrap().to_vec(), &fd, GRAD_RTOL);
    let fd = fd_grad(&|s0| loss.eval(&mixed_ref(&xs, &s, s0[0])), &[s0], FD_EPS);
    assert_close("mixed ds0", &g.leaf(s0v).unwrap().to_vec(), &fd, GRAD_RTOL);
    // per-sample reductions r[n, k] = sum(x_k[n] dy[n])
    let dy = loss.dy(&yref);
    let mut r = vec![0.0; n * k];
    for ni in 0..n {
        for ki in 0..k {
            r[ni * k + ki] = (0..per)
                .map(|j| xs[ki][ni * per + j] * dy[ni * per + j])
                .sum();
        }
    }
    assert_close(
        "mixed per-sample",
        &g.per_sample(y).unwrap().to_vec(),
        &r,
        1e-4,
    );

    let hc = tape.curvature_backward(l).unwrap();
    let hy = &loss.weights;
    for i in 0..k {
        let want: Vec<f64> = hy.iter().map(|h| h * (s0 * s[i]).powi(2)).collect();
        assert_close(
            "mixed hx_k",
            &hc.leaf(xv[i]).unwrap().to_vec(),
            &want,
            CURV_RTOL,
        );
    }
    let hs: Vec<f64> = (0..k)
        .map(|i| (0..n * per).map(|j| (s0 * xs[i][j]).powi(2) * hy[j]).sum())
        .collect();
    assert_close("mixed hs", &hc.leaf(sv).unwrap().to_vec(), &hs, CURV_RTOL);
    let hs0: f64 = (0..n * per)
        .map(|j| {
            let z: f64 = (0..k).map(|i| s[i] * xs[i][j]).sum();
            z * z * hy[j]
        })
        .sum();
    assert_close(
        "mixed hs0",
        &hc.leaf(s0v).unwrap().to_vec(),
        &[hs0],
        CURV_RTOL,
    );
}

/// Exact case of the method note: a switch feeding an elementwise squared-error loss directly.
/// The recursion must equal the exact second derivative sum(z^2).
#[test]
fn switch_curvature_exact_direct() {
    let mut rng = Rng::new(7);
    let z = round32(&randn(24, &mut rng));
    let t = round32(&randn(24, &mut rng));
    let s = 0.8;
    let mut store = ParamStore::new();
    let sid = store.add("s", "switches", tensor(&[s], &[1])).unwrap();
    let mut tape = Tape::new();
    let zv = tape.input(tensor(&z, &[2, 3, 2, 2]));
    let sv = tape.param(&store, sid);
    let y = tape.switch(zv, sv).unwrap();
    let l = tape
        .half_squared_error(y, &tensor(&t, &[2, 3, 2, 2]), None)
        .unwrap();
    let h = tape.curvature_backward(l).unwrap();
    let exact: f64 = z.iter().map(|v| v * v).sum();
    let f = |s: f64| -> f64 {
        z.iter()
            .zip(&t)
            .map(|(z, t)| 0.5 * (s * z - t).powi(2))
            .sum()
    };
    let e = 1e-3;
    let second = (f(s + e) - 2.0 * f(s) + f(s - e)) / (e * e);
    assert!(
        (second - exact).abs() < 1e-6 * exact.max(1.0),
        "analytic {exact} vs fd {second}"
    );
    assert_close(
        "switch h (direct)",
        &h.param(sid).unwrap().to_vec(),
        &[exact],
        1e-5,
    );
    // gradient too
    let g = tape.backward(l).unwrap();
    let gs: f64 = z.iter().zip(&t).map(|(z, t)| (s * z - t) * z).sum();
    assert_close("switch ds", &g.param(sid).unwrap().to_vec(), &[gs], 1e-5);
}

/// Exact case through a ReLU: sum(z^2 1[s z > 0]).
#[test]
fn switch_curvature_exact_through_relu() {
    let mut rng = Rng::new(8);
    let z = round32(&randn(30, &mut rng));
    let t = round32(&randn(30, &mut rng));
    let s = 1.3;
    let mut tape = Tape::new();
    let zv = tape.input(tensor(&z, &[30]));
    let sv = tape.leaf(tensor(&[s], &[1]));
    let y = tape.switch(zv, sv).unwrap();
    let r = tape.relu(y).unwrap();
    let l = tape
        .half_squared_error(r, &tensor(&t, &[30]), None)
        .unwrap();
    let h = tape.curvature_backward(l).unwrap();
    let exact: f64 = z.iter().filter(|&&v| s * v > 0.0).map(|v| v * v).sum();
    let f = |s: f64| -> f64 {
        z.iter()
            .zip(&t)
            .map(|(z, t)| 0.5 * ((s * z).max(0.0) - t).powi(2))
            .sum()
    };
    let e = 1e-4;
    let second = (f(s + e) - 2.0 * f(s) + f(s - e)) / (e * e);
    assert!(
        (second - exact).abs() < 1e-4 * exact,
        "analytic {exact} vs fd {second}"
    );
    assert_close(
        "switch h (relu)",
        &h.leaf(sv).unwrap().to_vec(),
        &[exact],
        1e-5,
    );
}

#[test]
fn concat_and_shift_crop() {
    let mut rng = Rng::new(9);
    let (n, h, w) = (2, 5, 6);
    let a = round32(&randn(n * 2 * h * w, &mut rng));
    let b = round32(&randn(n * 3 * h * w, &mut rng));
    let ho = h - 1;
    let wo = w - 1;
    let loss = LossSpec::new(n * 5 * ho * wo, &mut rng);
    let mut tape = Tape::new();
    let av = tape.leaf(tensor(&a, &[n, 2, h, w]));
    let bv = tape.leaf(tensor(&b, &[n, 3, h, w]));
    let c = tape.concat_channels(&[av, bv]).unwrap();
    let y = tape.shift_crop(c).unwrap();
    assert_eq!(tape.value(y).shape(), &[n, 5, ho, wo]);
    let l = loss.record(&mut tape, y);
    let reference = |a: &[f64], b: &[f64]| -> Vec<f64> {
        let mut out = Vec::new();
        for ni in 0..n {
            for ci in 0..5 {
                for i in 1..h {
                    for j in 1..w {
                        out.push(if ci < 2 {
                            a[((ni * 2 + ci) * h + i) * w + j]
                        } else {
                            b[((ni * 3 + ci - 2) * h + i) * w + j]
                        });
                    }
                }
            }
        }
        out
    };
    assert_close(
        "concat+crop forward",
        &tape.value(y).to_vec(),
        &reference(&a, &b),
        1e-7,
    );
    let g = tape.backward(l).unwrap();
    let fd = fd_grad(&|a| loss.eval(&reference(a, &b)), &a, FD_EPS);
    assert_close(
        "concat+crop da",
        &g.leaf(av).unwrap().to_vec(),
        &fd,
        GRAD_RTOL,
    );
    let fd = fd_grad(&|b| loss.eval(&reference(&a, b)), &b, FD_EPS);
    assert_close(
        "concat+crop db",
        &g.leaf(bv).unwrap().to_vec(),
        &fd,
        GRAD_RTOL,
    );
    // curvature: routed like the gradient (0 on the cropped border)
    let hc = tape.curvature_backward(l).unwrap();
    let ha = hc.leaf(av).unwrap().to_vec();
    for ni in 0..n {
        for ci in 0..2 {
            for i in 0..h {
                for j in 0..w {
                    let got = ha[((ni * 2 + ci) * h + i) * w + j] as f64;
                    let want = if i == 0 || j == 0 {
                        0.0
                    } else {
                        loss.weights[((ni * 5 + ci) * ho + i - 1) * wo + j - 1]
                    };
                    assert!((got - want).abs() < 1e-6);
                }
            }
        }
    }
}

#[test]
fn reshape_and_select_columns() {
    let mut rng = Rng::new(12);
    let (n, c, s) = (3, 4, 2);
    let cols = c * s;
    let idx = [5usize, 0, 7, 2, 6];
    let m = idx.len();
    let x = round32(&randn(n * cols, &mut rng));
    let loss = LossSpec::new(n * m, &mut rng);
    let mut tape = Tape::new();
    let xv = tape.leaf(tensor(&x, &[n, c, s]));
    let f = tape.flatten(xv).unwrap();
    assert_eq!(tape.value(f).shape(), &[n, cols]);
    let y = tape.select_columns(f, &idx).unwrap();
    assert_eq!(tape.value(y).shape(), &[n, m]);
    let l = loss.record(&mut tape, y);
    let reference = |x: &[f64]| -> Vec<f64> {
        let mut out = Vec::new();
        for r in 0..n {
            for &i in &idx {
                out.push(x[r * cols + i]);
            }
        }
        out
    };
    assert_close(
        "select_columns forward",
        &tape.value(y).to_vec(),
        &reference(&x),
        0.0,
    );
    let g = tape.backward(l).unwrap();
    let dx = g.leaf(xv).unwrap();
    assert_eq!(dx.shape(), &[n, c, s]);
    let fd = fd_grad(&|x| loss.eval(&reference(x)), &x, FD_EPS);
    assert_close("select_columns dx", &dx.to_vec(), &fd, GRAD_RTOL);
    // curvature: the loss weights routed into the selected columns, 0 elsewhere
    let h = tape.curvature_backward(l).unwrap();
    let hx = h.leaf(xv).unwrap();
    assert_eq!(hx.shape(), &[n, c, s]);
    let mut want = vec![0.0; n * cols];
    for r in 0..n {
        for (j, &i) in idx.iter().enumerate() {
            want[r * cols + i] = loss.weights[r * m + j];
        }
    }
    assert_close("select_columns hx", &hx.to_vec(), &want, CURV_RTOL);
}

#[test]
fn select_columns_backward_is_the_scatter_into_zeros() {
    let cpu = Device::Cpu.backend().unwrap();
    let mut rng = Rng::new(13);
    let (n, cols) = (4, 9);
    let idx = [8usize, 3, 0, 4];
    let m = idx.len();
    let mut dy: Vec<f32> = randn(n * m, &mut rng).iter().map(|&v| v as f32).collect();
    dy[1] = -0.0;
    let dyt = Tensor::from_vec(dy.clone(), &[n, m]).unwrap();
    let got = cpu.select_columns_backward(&dyt, &idx, cols).unwrap();
    assert_eq!(got.shape(), &[n, cols]);
    // Naive loop: dx[r * cols + i] += dy[r * m + j] into zeros (so -0 becomes +0).
    let mut want = vec![0f32; n * cols];
    for r in 0..n {
        for (j, &i) in idx.iter().enumerate() {
            want[r * cols + i] += dy[r * m + j];
        }
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got.to_vec()), bits(&want));
    assert_eq!(got.to_vec()[3].to_bits(), 0.0f32.to_bits());
}

#[test]
fn reshape_and_select_columns_reject_bad_arguments() {
    let mut tape = Tape::new();
    let x = tape.leaf(Tensor::from_vec(vec![0.5; 6], &[2, 3]).unwrap());
    let e = tape.select_columns(x, &[0, 3]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "select_columns: expected shape [N, > 3], found [2, 3]"
    );
    let e = tape.select_columns(x, &[2, 0, 2]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "select_columns: column 2 is selected more than once"
    );
    let e = tape.reshape(x, &[4, 2]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Tensor::reshape: expected shape 6 elements, found shape [4, 2]"
    );
    let r = tape.reshape(x, &[3, 2]).unwrap();
    assert_eq!(tape.value(r).shape(), &[3, 2]);
    let s = tape.leaf(Tensor::from_vec(vec![1.0], &[]).unwrap());
    let e = tape.flatten(s).unwrap_err();
    assert_eq!(e.to_string(), "flatten: expected shape [N, ...], found []");
}

#[test]
fn dropout_and_drop_path() {
    let mut rng = Rng::new(10);
    let x = round32(&randn(4 * 50, &mut rng));
    let loss = LossSpec::new(200, &mut rng);
    let mut tape = Tape::new();
    let xv = tape.leaf(tensor(&x, &[4, 50]));
    let mut drng = Rng::new(99);
    let y = tape.dropout(xv, 0.3, &mut drng).unwrap();
    let yv = tape.value(y).to_vec();
    // surviving elements are scaled by 1/(1-p), dropped are zero
    let mut dropped = 0;
    for (a, b) in yv.iter().zip(&x) {
        if *a == 0.0 {
            dropped += 1;
        } else {
            assert!((*a as f64 - b / 0.7).abs() < 1e-5);
        }
    }
    assert!(dropped > 30 && dropped < 100, "dropped {dropped} of 200");
    let mask: Vec<f64> = yv.iter().zip(&x).map(|(a, b)| *a as f64 / b).collect();
    let l = loss.record(&mut tape, y);
    let g = tape.backward(l).unwrap();
    let fd = fd_grad(
        &|x| loss.eval(&x.iter().zip(&mask).map(|(a, m)| a * m).collect::<Vec<_>>()),
        &x,
        FD_EPS,
    );
    assert_close("dropout dx", &g.leaf(xv).unwrap().to_vec(), &fd, GRAD_RTOL);
    let hc = tape.curvature_backward(l).unwrap();
    let want: Vec<f64> = mask
        .iter()
        .zip(&loss.weights)
        .map(|(m, w)| m * m * w)
        .collect();
    assert_close("dropout hx", &hc.leaf(xv).unwrap().to_vec(), &want, 1e-4);

    // drop-path zeroes whole samples
    let mut tape = Tape::new();
    let xv = tape.leaf(tensor(&x, &[4, 50]));
    let mut drng = Rng::new(5);
    let y = tape.drop_path(xv, 0.5, &mut drng).unwrap();
    let yv = tape.value(y).to_vec();
    for n in 0..4 {
        let row = &yv[n * 50..(n + 1) * 50];
        let zero = row.iter().all(|&v| v == 0.0);
        let scaled = row
            .iter()
            .zip(&x[n * 50..])
            .all(|(a, b)| (*a as f64 - 2.0 * b).abs() < 1e-5);
        assert!(zero || scaled, "sample {n} neither dropped nor scaled");
    }
    // eval mode: identity
    let mut tape = Tape::new_eval();
    let xv = tape.input(tensor(&x, &[4, 50]));
    assert_eq!(tape.drop_path(xv, 0.5, &mut drng).unwrap(), xv);
    assert_eq!(tape.dropout(xv, 0.5, &mut drng).unwrap(), xv);
    assert!(tape.dropout(xv, 1.0, &mut drng).is_err());
}

#[test]
fn group_norm_gradient() {
    let mut rng = Rng::new(11);
    let a = round32(&randn(3, &mut rng));
    let b = round32(&randn(1, &mut rng));
    let mut tape = Tape::new();
    let av = tape.leaf(tensor(&a, &[3]));
    let bv = tape.leaf(tensor(&b, &[1]));
    let nrm = tape.group_l2_norm(&[av, bv]).unwrap();
    let l = tape.scale(nrm, 0.7).unwrap();
    let f = |a: &[f64], b: &[f64]| 0.7 * (a.iter().chain(b).map(|v| v * v).sum::<f64>()).sqrt();
    assert!((tape.value(l).item().unwrap() as f64 - f(&a, &b)).abs() < 1e-6);
    let g = tape.backward(l).unwrap();
    assert_close(
        "norm da",
        &g.leaf(av).unwrap().to_vec(),
        &fd_grad(&|x| f(x, &b), &a, FD_EPS),
        GRAD_RTOL,
    );
    assert_close(
        "norm db",
        &g.leaf(bv).unwrap().to_vec(),
        &fd_grad(&|x| f(&a, x), &b, FD_EPS),
        GRAD_RTOL,
    );
}

#[test]
fn backward_requires_scalar_loss() {
    let mut tape = Tape::new();
    let x = tape.leaf(Tensor::full(&[2, 2], 1.0));
    let y = tape.relu(x).unwrap();
    assert!(tape.backward(y).is_err());
    assert!(tape.curvature_backward(y).is_err());
}
