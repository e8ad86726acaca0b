//! Batch norm (training and evaluation mode, running statistics) and the per-channel bias
//! against naive f64 references: forward, finite-difference gradients, curvature recursion.

mod common;

use bayesnas_engine::prelude::*;
use common::*;

const EPS: f32 = 1e-5;

/// `(n, c, s)` of an `[N, C, ...]` shape.
fn dims(shape: &[usize]) -> (usize, usize, usize) {
    (shape[0], shape[1], shape[2..].iter().product())
}

/// Per-channel mean and biased variance, two passes in f64.
fn stats_ref(x: &[f64], shape: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let (n, c, s) = dims(shape);
    let m = (n * s) as f64;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        for i in 0..n {
            for j in 0..s {
                mean[ch] += x[(i * c + ch) * s + j];
            }
        }
        mean[ch] /= m;
        for i in 0..n {
            for j in 0..s {
                let d = x[(i * c + ch) * s + j] - mean[ch];
                var[ch] += d * d;
            }
        }
        var[ch] /= m;
    }
    (mean, var)
}

/// `(x - mean) / sqrt(var + eps) * w + b` per channel.
fn affine_ref(
    x: &[f64],
    shape: &[usize],
    mean: &[f64],
    var: &[f64],
    w: Option<&[f64]>,
    b: Option<&[f64]>,
) -> Vec<f64> {
    let (_, c, s) = dims(shape);
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / s) % c;
            let xhat = (v - mean[ch]) / (var[ch] + EPS as f64).sqrt();
            xhat * w.map_or(1.0, |w| w[ch]) + b.map_or(0.0, |b| b[ch])
        })
        .collect()
}

/// Training-mode batch norm: normalised with the batch's own statistics.
fn train_ref(x: &[f64], shape: &[usize], w: Option<&[f64]>, b: Option<&[f64]>) -> Vec<f64> {
    let (mean, var) = stats_ref(x, shape);
    affine_ref(x, shape, &mean, &var, w, b)
}

/// The curvature recursion of batch norm as the per-channel affine map with statistics
/// `(mean, var)`: `(hx, hweight, hbias)`.
fn curvature_ref(
    x: &[f64],
    shape: &[usize],
    hy: &[f64],
    mean: &[f64],
    var: &[f64],
    w: Option<&[f64]>,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (_, c, s) = dims(shape);
    let mut hx = vec![0.0; x.len()];
    let mut hw = vec![0.0; c];
    let mut hb = vec![0.0; c];
    for i in 0..x.len() {
        let ch = (i / s) % c;
        let inv2 = 1.0 / (var[ch] + EPS as f64);
        let wc = w.map_or(1.0, |w| w[ch]);
        hx[i] = hy[i] * wc * wc * inv2;
        let xhat = (x[i] - mean[ch]) * inv2.sqrt();
        hw[ch] += xhat * xhat * hy[i];
        hb[ch] += hy[i];
    }
    (hx, hw, hb)
}

/// Random inputs whose channels have different means and spreads.
fn channel_data(shape: &[usize], rng: &mut Rng) -> Vec<f64> {
    let (_, c, s) = dims(shape);
    let offset = rand_uniform(c, -2.0, 2.0, rng);
    let spread = rand_uniform(c, 0.5, 3.0, rng);
    let z = randn(shape.iter().product(), rng);
    round32(
        &z.iter()
            .enumerate()
            .map(|(i, &z)| offset[(i / s) % c] + spread[(i / s) % c] * z)
            .collect::<Vec<_>>(),
    )
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_vec()
}

/// Forward, gradients (x, weight, bias) and curvature of one batch-norm configuration.
fn check_batch_norm(shape: &[usize], affine: bool, training: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let (_, c, _) = dims(shape);
    let x = channel_data(shape, &mut rng);
    let w = round32(&randn(c, &mut rng));
    let b = round32(&randn(c, &mut rng));
    let rm0 = round32(&randn(c, &mut rng));
    let rv0 = round32(&rand_uniform(c, 0.5, 2.0, &mut rng));
    let loss = LossSpec::new(x.len(), &mut rng);
    let (wr, br) = if affine {
        (Some(&w[..]), Some(&b[..]))
    } else {
        (None, None)
    };
    // The reference forward as a function of (x, w, b).
    let fwd = |x: &[f64], w: Option<&[f64]>, b: Option<&[f64]>| -> Vec<f64> {
        if training {
            train_ref(x, shape, w, b)
        } else {
            affine_ref(x, shape, &rm0, &rv0, w, b)
        }
    };

    let mut tape = if training {
        Tape::new()
    } else {
        Tape::new_eval()
    };
    let xv = tape.leaf(tensor(&x, shape));
    let wv = affine.then(|| tape.leaf(tensor(&w, &[c])));
    let bv = affine.then(|| tape.leaf(tensor(&b, &[c])));
    let mut rm = tensor(&rm0, &[c]);
    let mut rv = tensor(&rv0, &[c]);
    let y = tape
        .batch_norm(xv, wv, bv, Some((&mut rm, &mut rv)), 0.1, EPS)
        .unwrap();
    if !training {
        assert_eq!(
            values(&rm),
            tensor(&rm0, &[c]).to_vec(),
            "eval must not touch running mean"
        );
        assert_eq!(
            values(&rv),
            tensor(&rv0, &[c]).to_vec(),
            "eval must not touch running var"
        );
    }
    let l = loss.record(&mut tape, y);
    let tag = format!("{shape:?} affine={affine} training={training}");
    assert_close(
        &format!("{tag} forward"),
        &values(tape.value(y)),
        &fwd(&x, wr, br),
        1e-5,
    );

    let grads = tape.backward(l).unwrap();
    let fx = |xx: &[f64]| loss.eval(&fwd(xx, wr, br));
    let dx_fd = fd_grad(&fx, &x, 1e-3);
    assert_close(
        &format!("{tag} dx"),
        &values(grads.leaf(xv).unwrap()),
        &dx_fd,
        1e-3,
    );
    if affine {
        let fw = |ww: &[f64]| loss.eval(&fwd(&x, Some(ww), br));
        let fb = |bb: &[f64]| loss.eval(&fwd(&x, wr, Some(bb)));
        let dw = values(grads.leaf(wv.unwrap()).unwrap());
        let db = values(grads.leaf(bv.unwrap()).unwrap());
        assert_close(
            &format!("{tag} dweight"),
            &dw,
            &fd_grad(&fw, &w, 1e-3),
            1e-3,
        );
        assert_close(&format!("{tag} dbias"), &db, &fd_grad(&fb, &b, 1e-3), 1e-3);
    }

    let curv = tape.curvature_backward(l).unwrap();
    let (mean, var) = if training {
        stats_ref(&x, shape)
    } else {
        (rm0.clone(), rv0.clone())
    };
    let (hx, hw, hb) = curvature_ref(&x, shape, &loss.weights, &mean, &var, wr);
    assert_close(
        &format!("{tag} hx"),
        &values(curv.leaf(xv).unwrap()),
        &hx,
        1e-4,
    );
    if affine {
        assert_close(
            &format!("{tag} hweight"),
            &values(curv.leaf(wv.unwrap()).unwrap()),
            &hw,
            1e-4,
        );
        assert_close(
            &format!("{tag} hbias"),
            &values(curv.leaf(bv.unwrap()).unwrap()),
            &hb,
            1e-4,
        );
    }
}

#[test]
fn train_affine() {
    check_batch_norm(&[3, 4, 5, 3], true, true, 1);
    check_batch_norm(&[2, 3, 3, 7], true, true, 2);
}

#[test]
fn train_without_affine() {
    check_batch_norm(&[4, 3, 3, 5], false, true, 3);
    check_batch_norm(&[5, 2, 1, 1], false, true, 4);
}

/// Planes longer than the kernels' f32 block (1024) and not a multiple of their lane count
/// (32): block flushes and plane tails in the reductions.
#[test]
fn train_long_odd_planes() {
    check_batch_norm(&[2, 2, 23, 47], true, true, 20);
    check_batch_norm(&[3, 1, 7, 5], false, true, 21);
}

#[test]
fn train_two_dimensional_input() {
    check_batch_norm(&[7, 5], true, true, 5);
    check_batch_norm(&[6, 3], false, true, 6);
}

#[test]
fn eval_affine_and_plain() {
    check_batch_norm(&[3, 4, 5, 3], true, false, 7);
    check_batch_norm(&[2, 3, 4, 3], false, false, 8);
    check_batch_norm(&[5, 4], true, false, 9);
}

#[test]
fn running_stats_by_hand() {
    // One channel, values 1, 2, 3, 4: mean 2.5, biased var 1.25, unbiased var 5/3.
    let mut tape = Tape::new();
    let x = tape.input(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 1, 2, 1]).unwrap());
    let mut rm = Tensor::from_vec(vec![0.0], &[1]).unwrap();
    let mut rv = Tensor::from_vec(vec![1.0], &[1]).unwrap();
    let y = tape
        .batch_norm(x, None, None, Some((&mut rm, &mut rv)), 0.1, EPS)
        .unwrap();
    assert!((rm.item().unwrap() as f64 - 0.25).abs() < 1e-7, "{rm:?}");
    assert!(
        (rv.item().unwrap() as f64 - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6,
        "{rv:?}"
    );
    let s = (1.25 + EPS as f64).sqrt();
    let want: Vec<f64> = [1.0, 2.0, 3.0, 4.0].iter().map(|v| (v - 2.5) / s).collect();
    assert_close("hand forward", &values(tape.value(y)), &want, 1e-6);
}

#[test]
fn running_stats_over_steps_then_eval() {
    let shape = [3, 4, 5, 3];
    let c = 4;
    let mut rng = Rng::new(11);
    let mut rm_ref = round32(&randn(c, &mut rng));
    let mut rv_ref = round32(&rand_uniform(c, 0.5, 2.0, &mut rng));
    let mut rm = tensor(&rm_ref, &[c]);
    let mut rv = tensor(&rv_ref, &[c]);
    let m = (3 * 5 * 3) as f64;
    for (step, momentum) in [0.1f32, 0.1, 0.3].into_iter().enumerate() {
        let x = channel_data(&shape, &mut rng);
        let mut tape = Tape::new();
        let xv = tape.input(tensor(&x, &shape));
        tape.batch_norm(xv, None, None, Some((&mut rm, &mut rv)), momentum, EPS)
            .unwrap();
        let (mean, var) = stats_ref(&x, &shape);
        let mo = momentum as f64;
        for ch in 0..c {
            rm_ref[ch] = (1.0 - mo) * rm_ref[ch] + mo * mean[ch];
            rv_ref[ch] = (1.0 - mo) * rv_ref[ch] + mo * var[ch] * m / (m - 1.0);
        }
        assert_close(
            &format!("running mean, step {step}"),
            &values(&rm),
            &rm_ref,
            1e-5,
        );
        assert_close(
            &format!("running var, step {step}"),
            &values(&rv),
            &rv_ref,
            1e-5,
        );
    }
    // Evaluation uses exactly those statistics.
    let x = channel_data(&shape, &mut rng);
    let w = round32(&randn(c, &mut rng));
    let b = round32(&randn(c, &mut rng));
    let mut tape = Tape::new_eval();
    let xv = tape.input(tensor(&x, &shape));
    let wv = tape.input(tensor(&w, &[c]));
    let bv = tape.input(tensor(&b, &[c]));
    let y = tape
        .batch_norm(xv, Some(wv), Some(bv), Some((&mut rm, &mut rv)), 0.1, EPS)
        .unwrap();
    let (rmv, rvv): (Vec<f64>, Vec<f64>) = (
        values(&rm).iter().map(|&v| v as f64).collect(),
        values(&rv).iter().map(|&v| v as f64).collect(),
    );
    let want = affine_ref(&x, &shape, &rmv, &rvv, Some(&w), Some(&b));
    assert_close("eval forward", &values(tape.value(y)), &want, 1e-5);
}

#[test]
fn large_mean_keeps_precision() {
    // A channel mean 1000 times its spread: the forward still matches to 1e-5.
    let shape = [4, 3, 6, 5];
    let mut rng = Rng::new(12);
    let x: Vec<f64> = round32(
        &randn(4 * 3 * 30, &mut rng)
            .iter()
            .map(|v| 1000.0 + v)
            .collect::<Vec<_>>(),
    );
    let mut tape = Tape::new();
    let xv = tape.input(tensor(&x, &shape));
    let y = tape.batch_norm(xv, None, None, None, 0.1, EPS).unwrap();
    assert_close(
        "large mean forward",
        &values(tape.value(y)),
        &train_ref(&x, &shape, None, None),
        1e-5,
    );
}

/// Supernet-sized shape through the backend directly: forward, statistics and the full
/// training-mode gradient against the analytic f64 formula, and bitwise equality of the
/// results computed with 1 and with 3 threads.
#[test]
fn backend_supernet_shape_and_thread_determinism() {
    let shape = [32, 16, 16, 16];
    let (n, c, s) = dims(&shape);
    let mut rng = Rng::new(13);
    let x = channel_data(&shape, &mut rng);
    let dy = round32(&randn(x.len(), &mut rng));
    let w = round32(&randn(c, &mut rng));
    let b = round32(&randn(c, &mut rng));
    let (xt, dyt, wt, bt) = (
        tensor(&x, &shape),
        tensor(&dy, &shape),
        tensor(&w, &[c]),
        tensor(&b, &[c]),
    );
    let run = |threads: usize| {
        on_threads(threads, || {
            let be = Device::Cpu.backend().unwrap();
            let f = be
                .batch_norm_train_forward(&xt, Some(&wt), Some(&bt), EPS)
                .unwrap();
            let g = be
                .batch_norm_backward(&dyt, &xt, &f.mean, &f.invstd, Some(&wt))
                .unwrap();
            let sums = be.channel_sums(&xt, Some(&dyt)).unwrap();
            [f.y, f.mean, f.var, f.invstd, g.dx, g.dweight, g.dbias, sums].map(|t| t.to_vec())
        })
    };
    let one = run(1);
    assert_eq!(one, run(3), "results depend on the number of threads");
    let [y, mean, var, invstd, dx, dw, db, sums] = one;

    let (mr, vr) = stats_ref(&x, &shape);
    assert_close("mean", &mean, &mr, 1e-6);
    assert_close("var", &var, &vr, 1e-6);
    let ir: Vec<f64> = vr.iter().map(|v| 1.0 / (v + EPS as f64).sqrt()).collect();
    assert_close("invstd", &invstd, &ir, 1e-6);
    assert_close(
        "forward",
        &y,
        &affine_ref(&x, &shape, &mr, &vr, Some(&w), Some(&b)),
        1e-5,
    );

    let m = (n * s) as f64;
    let mut sdy = vec![0.0; c];
    let mut sdyx = vec![0.0; c];
    let mut sxy = vec![0.0; c];
    for i in 0..x.len() {
        let ch = (i / s) % c;
        sdy[ch] += dy[i];
        sdyx[ch] += dy[i] * (x[i] - mr[ch]) * ir[ch];
        sxy[ch] += dy[i] * x[i];
    }
    let dx_ref: Vec<f64> = (0..x.len())
        .map(|i| {
            let ch = (i / s) % c;
            let xhat = (x[i] - mr[ch]) * ir[ch];
            w[ch] * ir[ch] * (dy[i] - sdy[ch] / m - xhat * sdyx[ch] / m)
        })
        .collect();
    assert_close("dx", &dx, &dx_ref, 1e-4);
    assert_close("dweight", &dw, &sdyx, 1e-5);
    assert_close("dbias", &db, &sdy, 1e-5);
    assert_close("channel_sums(x, dy)", &sums, &sxy, 1e-5);
}

#[test]
fn add_channel_bias() {
    for (seed, shape) in [(21u64, vec![3, 4, 5, 3]), (22, vec![6, 5])] {
        let mut rng = Rng::new(seed);
        let (_, c, s) = dims(&shape);
        let x = round32(&randn(shape.iter().product(), &mut rng));
        let b = round32(&randn(c, &mut rng));
        let loss = LossSpec::new(x.len(), &mut rng);
        let fwd = |x: &[f64], b: &[f64]| -> Vec<f64> {
            x.iter()
                .enumerate()
                .map(|(i, v)| v + b[(i / s) % c])
                .collect()
        };
        let mut tape = Tape::new();
        let xv = tape.leaf(tensor(&x, &shape));
        let bv = tape.leaf(tensor(&b, &[c]));
        let y = tape.add_channel_bias(xv, bv).unwrap();
        let l = loss.record(&mut tape, y);
        // x + b in f32 is exactly the rounded f64 sum.
        let want = round32(&fwd(&x, &b));
        assert_eq!(
            values(tape.value(y)),
            tensor(&want, &shape).to_vec(),
            "{shape:?} forward"
        );

        let grads = tape.backward(l).unwrap();
        let fx = |xx: &[f64]| loss.eval(&fwd(xx, &b));
        let fb = |bb: &[f64]| loss.eval(&fwd(&x, bb));
        assert_close(
            "bias dx",
            &values(grads.leaf(xv).unwrap()),
            &fd_grad(&fx, &x, 1e-3),
            1e-3,
        );
        assert_close(
            "bias db",
            &values(grads.leaf(bv).unwrap()),
            &fd_grad(&fb, &b, 1e-3),
            1e-3,
        );

        let curv = tape.curvature_backward(l).unwrap();
        let mut hb = vec![0.0; c];
        for (i, h) in loss.weights.iter().enumerate() {
            hb[(i / s) % c] += h;
        }
        assert_close(
            "bias hx",
            &values(curv.leaf(xv).unwrap()),
            &loss.weights,
            1e-4,
        );
        assert_close("bias hb", &values(curv.leaf(bv).unwrap()), &hb, 1e-4);
    }
}

#[test]
fn shape_and_argument_errors() {
    let mut rng = Rng::new(31);
    let mut tape = Tape::new();
    let x = tape.leaf(Tensor::randn(&[2, 3, 4, 4], 1.0, &mut rng));
    let x1 = tape.leaf(Tensor::randn(&[6], 1.0, &mut rng));
    let w3 = tape.leaf(Tensor::randn(&[3], 1.0, &mut rng));
    let w4 = tape.leaf(Tensor::randn(&[4], 1.0, &mut rng));
    let mut rm = Tensor::full(&[3], 0.5);
    let mut rv = Tensor::full(&[3], 2.0);
    let mut rm_bad = Tensor::full(&[4], 0.5);
    let shape_err = |r: Result<Var>| matches!(r, Err(Error::Shape { .. }));

    assert!(shape_err(tape.batch_norm(x1, None, None, None, 0.1, EPS)));
    assert!(shape_err(tape.batch_norm(
        x,
        Some(w4),
        None,
        Some((&mut rm, &mut rv)),
        0.1,
        EPS
    )));
    assert!(shape_err(tape.batch_norm(
        x,
        Some(w3),
        Some(w4),
        Some((&mut rm, &mut rv)),
        0.1,
        EPS
    )));
    assert!(shape_err(tape.batch_norm(
        x,
        None,
        None,
        Some((&mut rm_bad, &mut rv)),
        0.1,
        EPS
    )));
    // Failed calls leave the running statistics alone.
    assert_eq!(rm.to_vec(), vec![0.5; 3]);
    assert_eq!(rv.to_vec(), vec![2.0; 3]);
    assert!(tape
        .batch_norm(x, None, None, Some((&mut rm, &mut rv)), 1.5, EPS)
        .is_err());
    assert!(tape.batch_norm(x, None, None, None, 0.1, -1.0).is_err());
    assert!(tape.batch_norm(x, None, None, None, 0.1, f32::NAN).is_err());
    // One value per channel cannot be normalised in training.
    let single = tape.leaf(Tensor::randn(&[1, 3, 1, 1], 1.0, &mut rng));
    assert!(tape.batch_norm(single, None, None, None, 0.1, EPS).is_err());
    assert_eq!(rm.to_vec(), vec![0.5; 3]);
    assert!(shape_err(tape.add_channel_bias(x, w4)));
    assert!(shape_err(tape.add_channel_bias(x1, w3)));

    let mut eval = Tape::new_eval();
    let xe = eval.input(Tensor::randn(&[2, 3, 4, 4], 1.0, &mut rng));
    assert!(matches!(
        eval.batch_norm(xe, None, None, None, 0.1, EPS),
        Err(Error::Invalid(_))
    ));

    let be = Device::Cpu.backend().unwrap();
    let xt = Tensor::randn(&[2, 3, 4, 4], 1.0, &mut rng);
    let c3 = Tensor::full(&[3], 1.0);
    let c4 = Tensor::full(&[4], 1.0);
    let other = Tensor::randn(&[2, 3, 4, 5], 1.0, &mut rng);
    let is_shape = |e: Error| matches!(e, Error::Shape { .. });
    assert!(is_shape(
        be.batch_norm_train_forward(&xt, Some(&c4), None, EPS)
            .unwrap_err()
    ));
    assert!(is_shape(
        be.batch_norm_train_forward(&c3, None, None, EPS)
            .unwrap_err()
    ));
    assert!(is_shape(
        be.batch_norm_backward(&other, &xt, &c3, &c3, None)
            .unwrap_err()
    ));
    assert!(is_shape(
        be.batch_norm_backward(&xt, &xt, &c4, &c3, None)
            .unwrap_err()
    ));
    assert!(is_shape(
        be.batch_norm_backward(&xt, &xt, &c3, &c3, Some(&c4))
            .unwrap_err()
    ));
    assert!(is_shape(be.channel_affine(&xt, &c4, None).unwrap_err()));
    assert!(is_shape(
        be.channel_affine(&xt, &c3, Some(&c4)).unwrap_err()
    ));
    assert!(is_shape(be.channel_sums(&xt, Some(&other)).unwrap_err()));
    assert!(is_shape(be.channel_sums(&c3, None).unwrap_err()));
}

/// `Tape::batch_norm_relu` (one op; the ReLU rides in the batch-norm kernels) against
/// `Tape::batch_norm` followed by `Tape::relu`, bit for bit: output, running statistics,
/// gradients and curvatures of x, weight and bias, in training and evaluation mode, with and
/// without affine parameters. Random never-zero data with about half the outputs negative, so
/// the mask matters; a fused op that forgot to mask (or masked by the wrong tensor) differs.
#[test]
fn batch_norm_relu_equals_batch_norm_then_relu_bit_for_bit() {
    for (k, &(shape, affine, training)) in [
        (&[4usize, 3, 5, 5][..], true, true),
        (&[4, 3, 5, 5][..], false, true),
        (&[2, 6, 7, 3][..], true, false),
        (&[2, 6, 7, 3][..], false, false),
        (&[8, 5][..], true, true),
    ]
    .iter()
    .enumerate()
    {
        let mut rng = Rng::new(700 + k as u64);
        let (_, c, _) = dims(shape);
        let x = channel_data(shape, &mut rng);
        let w = round32(&randn(c, &mut rng));
        let b = round32(&randn(c, &mut rng));
        let rm0 = round32(&randn(c, &mut rng));
        let rv0 = round32(&rand_uniform(c, 0.5, 2.0, &mut rng));
        let loss = LossSpec::new(x.len(), &mut rng);
        let run = |fused: bool| {
            let mut tape = if training {
                Tape::new()
            } else {
                Tape::new_eval()
            };
            let xv = tape.leaf(tensor(&x, shape));
            let wv = affine.then(|| tape.leaf(tensor(&w, &[c])));
            let bv = affine.then(|| tape.leaf(tensor(&b, &[c])));
            let (mut rm, mut rv) = (tensor(&rm0, &[c]), tensor(&rv0, &[c]));
            let running = Some((&mut rm, &mut rv));
            let y = if fused {
                tape.batch_norm_relu(xv, wv, bv, running, 0.1, EPS).unwrap()
            } else {
                let a = tape.batch_norm(xv, wv, bv, running, 0.1, EPS).unwrap();
                tape.relu(a).unwrap()
            };
            let l = loss.record(&mut tape, y);
            let g = tape.backward(l).unwrap();
            let h = tape.curvature_backward(l).unwrap();
            let mut out = vec![values(tape.value(y)), values(&rm), values(&rv)];
            for v in [Some(xv), wv, bv].into_iter().flatten() {
                out.push(values(g.leaf(v).unwrap()));
                out.push(values(h.leaf(v).unwrap()));
            }
            out
        };
        let (fused, plain) = (run(true), run(false));
        let y = &plain[0];
        let negative = y.iter().filter(|&&v| v == 0.0).count();
        assert!(
            negative > y.len() / 5 && negative < y.len() * 4 / 5,
            "{shape:?}: the data must exercise the mask ({negative} of {} rectified)",
            y.len()
        );
        assert_eq!(fused.len(), plain.len());
        for (i, (f, p)) in fused.iter().zip(&plain).enumerate() {
            let (fb, pb): (Vec<u32>, Vec<u32>) = (
                f.iter().map(|v| v.to_bits()).collect(),
                p.iter().map(|v| v.to_bits()).collect(),
            );
            assert_eq!(
                fb, pb,
                "{shape:?} affine={affine} training={training}: output {i} differs"
            );
        }
    }
}
