//! Max, average and global average pooling against naive f64 references: forward,
//! finite-difference gradients, curvature recursion, borders, ties, NaN and errors.

mod common;

use bayesnas_engine::prelude::*;
use bayesnas_engine::Backend;
use common::*;

/// Max-pool backward through the backend: the forward's argmax, then the scatter of `dy`.
fn max_backward(be: &dyn Backend, x: &Tensor, dy: &Tensor, sp: Pool2dSpec) -> Result<Tensor> {
    let (_, argmax) = be.max_pool2d_forward(x, sp)?;
    be.max_pool2d_backward(&argmax, dy, x.shape())
}

/// Output size, written out from the definition (floor mode).
fn out_len(len: usize, sp: Pool2dSpec) -> usize {
    (len + 2 * sp.padding - sp.kernel) / sp.stride + 1
}

/// In-image positions `(i, j)` of window `(oh, ow)` in row-major order.
fn window(oh: usize, ow: usize, h: usize, w: usize, sp: Pool2dSpec) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    for di in 0..sp.kernel {
        for dj in 0..sp.kernel {
            let i = (oh * sp.stride + di) as isize - sp.padding as isize;
            let j = (ow * sp.stride + dj) as isize - sp.padding as isize;
            if i >= 0 && j >= 0 && (i as usize) < h && (j as usize) < w {
                v.push((i as usize, j as usize));
            }
        }
    }
    v
}

/// Calls `f(plane, output index, flat input indices of the window)` for every window.
fn for_windows(shape: &[usize], sp: Pool2dSpec, mut f: impl FnMut(usize, usize, &[usize])) {
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    let (ho, wo) = (out_len(h, sp), out_len(w, sp));
    for p in 0..n * c {
        for oh in 0..ho {
            for ow in 0..wo {
                let idx: Vec<usize> = window(oh, ow, h, w, sp)
                    .into_iter()
                    .map(|(i, j)| p * h * w + i * w + j)
                    .collect();
                f(p, (p * ho + oh) * wo + ow, &idx);
            }
        }
    }
}

fn out_shape(shape: &[usize], sp: Pool2dSpec) -> Vec<usize> {
    vec![
        shape[0],
        shape[1],
        out_len(shape[2], sp),
        out_len(shape[3], sp),
    ]
}

/// Max pool: values and the first maximum (row-major) of each window.
fn max_ref(x: &[f64], shape: &[usize], sp: Pool2dSpec) -> (Vec<f64>, Vec<usize>) {
    let mut y = Vec::new();
    let mut arg = Vec::new();
    for_windows(shape, sp, |_, _, idx| {
        let mut best = idx[0];
        for &i in idx {
            if x[i] > x[best] {
                best = i;
            }
        }
        y.push(x[best]);
        arg.push(best);
    });
    (y, arg)
}

/// Average pool with padding not counted.
fn avg_ref(x: &[f64], shape: &[usize], sp: Pool2dSpec) -> Vec<f64> {
    let mut y = Vec::new();
    for_windows(shape, sp, |_, _, idx| {
        y.push(idx.iter().map(|&i| x[i]).sum::<f64>() / idx.len() as f64);
    });
    y
}

/// `dx[i] = sum over windows holding i of dy[o] / n_o^power`.
fn avg_spread_ref(dy: &[f64], shape: &[usize], sp: Pool2dSpec, power: i32) -> Vec<f64> {
    let mut dx = vec![0.0; shape.iter().product()];
    for_windows(shape, sp, |_, o, idx| {
        for &i in idx {
            dx[i] += dy[o] / (idx.len() as f64).powi(power);
        }
    });
    dx
}

/// `dx[argmax(o)] += dy[o]`.
fn max_route_ref(dy: &[f64], arg: &[usize], len: usize) -> Vec<f64> {
    let mut dx = vec![0.0; len];
    for (o, &a) in arg.iter().enumerate() {
        dx[a] += dy[o];
    }
    dx
}

fn global_ref(x: &[f64], shape: &[usize]) -> Vec<f64> {
    let hw = shape[2] * shape[3];
    x.chunks(hw)
        .map(|p| p.iter().sum::<f64>() / hw as f64)
        .collect()
}

/// Random distinct values at least 0.006 apart (no ties, even after a finite-difference
/// step of 1e-3), shifted by `offset`.
fn distinct(n: usize, offset: f64, rng: &mut Rng) -> Vec<f64> {
    let mut rank: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut rank);
    let jitter = rand_uniform(n, -0.002, 0.002, rng);
    round32(
        &rank
            .iter()
            .zip(&jitter)
            .map(|(&r, &j)| offset + (r as f64 - n as f64 / 2.0) * 0.01 + j)
            .collect::<Vec<_>>(),
    )
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Max,
    Avg,
}

/// Forward, FD gradient and curvature of one pooling configuration through the tape.
fn check_pool(kind: Kind, shape: &[usize], sp: Pool2dSpec, offset: f64, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = distinct(shape.iter().product(), offset, &mut rng);
    let yshape = out_shape(shape, sp);
    let loss = LossSpec::new(yshape.iter().product(), &mut rng);
    let fwd = |x: &[f64]| match kind {
        Kind::Max => max_ref(x, shape, sp).0,
        Kind::Avg => avg_ref(x, shape, sp),
    };
    let mut tape = Tape::new();
    let xv = tape.leaf(tensor(&x, shape));
    let y = match kind {
        Kind::Max => tape.max_pool2d(xv, sp),
        Kind::Avg => tape.avg_pool2d(xv, sp),
    }
    .unwrap();
    let tag = format!("{kind:?} {shape:?} {sp:?}");
    assert_eq!(tape.value(y).shape(), &yshape[..], "{tag} shape");
    let l = loss.record(&mut tape, y);
    assert_close(
        &format!("{tag} forward"),
        &tape.value(y).to_vec(),
        &fwd(&x),
        1e-5,
    );

    let grads = tape.backward(l).unwrap();
    let f = |xx: &[f64]| loss.eval(&fwd(xx));
    let dx_fd = fd_grad(&f, &x, 1e-3);
    assert_close(
        &format!("{tag} dx"),
        &grads.leaf(xv).unwrap().to_vec(),
        &dx_fd,
        1e-3,
    );

    let curv = tape.curvature_backward(l).unwrap();
    let hx = match kind {
        Kind::Max => max_route_ref(&loss.weights, &max_ref(&x, shape, sp).1, x.len()),
        Kind::Avg => avg_spread_ref(&loss.weights, shape, sp, 2),
    };
    assert_close(
        &format!("{tag} hx"),
        &curv.leaf(xv).unwrap().to_vec(),
        &hx,
        1e-4,
    );
}

/// The supernet's 3x3 pools on odd sizes, plus other geometries through the same code.
const CASES: &[(usize, usize, usize, [usize; 4])] = &[
    (3, 1, 1, [2, 3, 7, 7]),
    (3, 1, 1, [2, 2, 5, 9]),
    (3, 2, 1, [2, 3, 7, 7]),
    (3, 2, 1, [2, 2, 5, 9]),
    (3, 2, 1, [1, 2, 8, 8]),
    (3, 1, 0, [1, 2, 5, 6]),
    (2, 2, 0, [2, 2, 6, 5]),
    (5, 1, 2, [1, 2, 6, 7]),
    (3, 3, 1, [1, 2, 7, 8]),
    (1, 1, 0, [1, 2, 3, 3]),
    (3, 1, 1, [1, 2, 1, 4]),
    (5, 2, 2, [1, 2, 9, 8]),
    (4, 2, 1, [1, 2, 7, 6]),
];

#[test]
fn max_pool_geometries() {
    for (i, &(k, s, p, shape)) in CASES.iter().enumerate() {
        check_pool(Kind::Max, &shape, pool_spec(k, s, p), 0.0, 100 + i as u64);
    }
}

#[test]
fn max_pool_all_negative_padding_never_wins() {
    for (i, &(k, s, p, shape)) in CASES.iter().enumerate().take(5) {
        check_pool(Kind::Max, &shape, pool_spec(k, s, p), -10.0, 200 + i as u64);
    }
    // And explicitly: a corner window of negative values is their maximum, not the padding.
    let mut tape = Tape::new();
    let x = tape
        .input(Tensor::from_vec((1..=25).map(|v| -(v as f32)).collect(), &[1, 1, 5, 5]).unwrap());
    let y = tape.max_pool2d(x, pool_spec(3, 2, 1)).unwrap();
    let y = tape.value(y).to_vec();
    assert_eq!(y[0], -1.0);
    assert_eq!(y[2], -4.0);
    assert_eq!(y[8], -19.0);
}

#[test]
fn avg_pool_geometries() {
    for (i, &(k, s, p, shape)) in CASES.iter().enumerate() {
        check_pool(Kind::Avg, &shape, pool_spec(k, s, p), 0.5, 300 + i as u64);
    }
}

#[test]
fn avg_pool_border_counts_exclude_padding() {
    let mut rng = Rng::new(400);
    let (h, w) = (5, 9);
    let x = round32(&randn(h * w, &mut rng));
    let at = |i: usize, j: usize| x[i * w + j];
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    for s in [1, 2] {
        let mut tape = Tape::new();
        let xv = tape.input(tensor(&x, &[1, 1, h, w]));
        let y = tape.avg_pool2d(xv, pool_spec(3, s, 1)).unwrap();
        let y = tape.value(y).to_vec();
        let wo = out_len(w, pool_spec(3, s, 1));
        // Top-left corner: 4 elements, not 9.
        let corner = mean(&[at(0, 0), at(0, 1), at(1, 0), at(1, 1)]);
        assert!(
            (y[0] as f64 - corner).abs() < 1e-6,
            "stride {s}: {} vs {corner}",
            y[0]
        );
        // Bottom-right corner: rows 3..5, cols 7..9 for both strides (4 elements).
        let br = mean(&[at(3, 7), at(3, 8), at(4, 7), at(4, 8)]);
        assert!(
            (y[y.len() - 1] as f64 - br).abs() < 1e-6,
            "stride {s}: {} vs {br}",
            y[y.len() - 1]
        );
        // Top edge, second window: 6 elements.
        let c0 = s - 1;
        let edge = mean(&[
            at(0, c0),
            at(0, c0 + 1),
            at(0, c0 + 2),
            at(1, c0),
            at(1, c0 + 1),
            at(1, c0 + 2),
        ]);
        assert!(
            (y[1] as f64 - edge).abs() < 1e-6,
            "stride {s}: {} vs {edge}",
            y[1]
        );
        // An interior window: 9 elements.
        let (oh, ow) = (1, 1);
        let (r0, q0) = (oh * s - 1, ow * s - 1);
        let mut inner = Vec::new();
        for i in r0..r0 + 3 {
            for j in q0..q0 + 3 {
                inner.push(at(i, j));
            }
        }
        assert!(
            (y[oh * wo + ow] as f64 - mean(&inner)).abs() < 1e-6,
            "stride {s}: interior"
        );
    }
}

#[test]
fn max_pool_ties_go_to_the_first_maximum() {
    let be = Device::Cpu.backend().unwrap();
    let sp = pool_spec(3, 1, 1);
    let ones = Tensor::full(&[1, 1, 4, 4], 1.0);
    // A constant plane (and a plane of -inf): every window's first in-image element wins.
    // Window rows start at max(oh - 1, 0) = 0, 0, 1, 2, so rows 0..3 win 2, 1, 1, 0 times.
    let counts = [2.0f32, 1.0, 1.0, 0.0];
    let want: Vec<f32> = (0..16).map(|i| counts[i / 4] * counts[i % 4]).collect();
    for v in [0.5f32, f32::NEG_INFINITY] {
        let x = Tensor::full(&[1, 1, 4, 4], v);
        let dx = max_backward(be, &x, &ones, sp).unwrap().to_vec();
        assert_eq!(dx, want, "constant {v}");
        let y = be.max_pool2d_forward(&x, sp).unwrap().0.to_vec();
        assert!(y.iter().all(|&y| y == v));
    }
    // Two equal maxima in one window: row-major order picks the upper-left one.
    let x = Tensor::from_vec(vec![0.0, 2.0, 1.0, 2.0], &[1, 1, 2, 2]).unwrap();
    let dy = Tensor::full(&[1, 1, 1, 1], 1.0);
    let dx = max_backward(be, &x, &dy, pool_spec(2, 1, 0))
        .unwrap()
        .to_vec();
    assert_eq!(dx, vec![0.0, 1.0, 0.0, 0.0]);
    let x = Tensor::from_vec(vec![0.0, 1.0, 2.0, 2.0], &[1, 1, 2, 2]).unwrap();
    let dx = max_backward(be, &x, &dy, pool_spec(2, 1, 0))
        .unwrap()
        .to_vec();
    assert_eq!(dx, vec![0.0, 0.0, 1.0, 0.0]);
}

#[test]
fn max_pool_propagates_nan() {
    let be = Device::Cpu.backend().unwrap();
    let mut v: Vec<f32> = (0..9).map(|i| i as f32).collect();
    v[4] = f32::NAN;
    let x = Tensor::from_vec(v, &[1, 1, 3, 3]).unwrap();
    let sp = pool_spec(3, 1, 1);
    let y = be.max_pool2d_forward(&x, sp).unwrap().0.to_vec();
    assert!(y.iter().all(|v| v.is_nan()), "{y:?}");
    let dx = max_backward(be, &x, &Tensor::full(&[1, 1, 3, 3], 1.0), sp)
        .unwrap()
        .to_vec();
    let mut want = vec![0.0f32; 9];
    want[4] = 9.0;
    assert_eq!(dx, want);
}

#[test]
fn global_avg_pool() {
    for (seed, shape) in [
        (500u64, [3, 4, 5, 3]),
        (501, [2, 3, 1, 1]),
        (502, [1, 2, 6, 7]),
    ] {
        let mut rng = Rng::new(seed);
        let x = round32(&randn(shape.iter().product(), &mut rng));
        let loss = LossSpec::new(shape[0] * shape[1], &mut rng);
        let mut tape = Tape::new();
        let xv = tape.leaf(tensor(&x, &shape));
        let y = tape.global_avg_pool(xv).unwrap();
        assert_eq!(tape.value(y).shape(), &[shape[0], shape[1]]);
        let l = loss.record(&mut tape, y);
        assert_close(
            "global forward",
            &tape.value(y).to_vec(),
            &global_ref(&x, &shape),
            1e-5,
        );
        let grads = tape.backward(l).unwrap();
        let f = |xx: &[f64]| loss.eval(&global_ref(xx, &shape));
        assert_close(
            "global dx",
            &grads.leaf(xv).unwrap().to_vec(),
            &fd_grad(&f, &x, 1e-3),
            1e-3,
        );
        let curv = tape.curvature_backward(l).unwrap();
        let hw = (shape[2] * shape[3]) as f64;
        let hx: Vec<f64> = (0..x.len())
            .map(|i| loss.weights[i / shape[2] / shape[3]] / (hw * hw))
            .collect();
        assert_close("global hx", &curv.leaf(xv).unwrap().to_vec(), &hx, 1e-4);
    }
}

/// Supernet-sized planes through the backend: forward and both backward kernels against the
/// references, and bitwise-identical results with 1 and 3 threads.
#[test]
fn backend_supernet_shape_and_thread_determinism() {
    let shape = [4, 16, 32, 32];
    let mut rng = Rng::new(600);
    let x = round32(&randn(shape.iter().product(), &mut rng));
    let xt = tensor(&x, &shape);
    for sp in [pool_spec(3, 1, 1), pool_spec(3, 2, 1)] {
        let ys = out_shape(&shape, sp);
        let dy = round32(&randn(ys.iter().product(), &mut rng));
        let dyt = tensor(&dy, &ys);
        let run = |threads: usize| {
            on_threads(threads, || {
                let be = Device::Cpu.backend().unwrap();
                let (ymax, argmax) = be.max_pool2d_forward(&xt, sp).unwrap();
                [
                    be.max_pool2d_backward(&argmax, &dyt, &shape).unwrap(),
                    ymax,
                    argmax,
                    be.avg_pool2d_forward(&xt, sp).unwrap(),
                    be.avg_pool2d_backward(&dyt, sp, &shape, 1).unwrap(),
                    be.avg_pool2d_backward(&dyt, sp, &shape, 2).unwrap(),
                ]
                .map(|t| t.to_vec())
            })
        };
        let one = run(1);
        assert_eq!(
            one,
            run(3),
            "{sp:?}: results depend on the number of threads"
        );
        let [dmax, ymax, argmax, yavg, davg1, davg2] = one;
        let (ymr, arg) = max_ref(&x, &shape, sp);
        assert_close("max forward", &ymax, &ymr, 1e-6);
        let plane = shape[2] * shape[3];
        let arg_in_plane: Vec<f32> = arg.iter().map(|&a| (a % plane) as f32).collect();
        assert_eq!(argmax, arg_in_plane, "{sp:?}: argmax offsets");
        assert_close(
            "max backward",
            &dmax,
            &max_route_ref(&dy, &arg, x.len()),
            1e-6,
        );
        assert_close("avg forward", &yavg, &avg_ref(&x, &shape, sp), 1e-5);
        assert_close(
            "avg backward",
            &davg1,
            &avg_spread_ref(&dy, &shape, sp, 1),
            1e-5,
        );
        assert_close(
            "avg backward power 2",
            &davg2,
            &avg_spread_ref(&dy, &shape, sp, 2),
            1e-5,
        );
    }
}

#[test]
fn shape_and_argument_errors() {
    let mut rng = Rng::new(700);
    let mut tape = Tape::new();
    let x = tape.leaf(Tensor::randn(&[2, 3, 6, 6], 1.0, &mut rng));
    let x3 = tape.leaf(Tensor::randn(&[3, 6, 6], 1.0, &mut rng));
    let tiny = tape.leaf(Tensor::randn(&[1, 1, 1, 2], 1.0, &mut rng));
    let is_shape = |r: Result<Var>| matches!(r, Err(Error::Shape { .. }));
    let is_invalid = |r: Result<Var>| matches!(r, Err(Error::Invalid(_)));
    assert!(is_shape(tape.max_pool2d(x3, pool_spec(3, 1, 1))));
    assert!(is_shape(tape.avg_pool2d(x3, pool_spec(3, 1, 1))));
    assert!(is_shape(tape.global_avg_pool(x3)));
    assert!(is_invalid(tape.max_pool2d(x, pool_spec(0, 1, 0))));
    assert!(is_invalid(tape.avg_pool2d(x, pool_spec(3, 0, 1))));
    assert!(is_invalid(tape.max_pool2d(x, pool_spec(3, 1, 2))));
    assert!(is_invalid(tape.avg_pool2d(x, pool_spec(3, 1, 2))));
    assert!(is_shape(tape.max_pool2d(tiny, pool_spec(3, 1, 0))));
    assert!(is_shape(tape.avg_pool2d(tiny, pool_spec(3, 1, 0))));
    assert!(tape.max_pool2d(tiny, pool_spec(3, 1, 1)).is_ok());

    let be = Device::Cpu.backend().unwrap();
    let xt = Tensor::randn(&[2, 3, 6, 6], 1.0, &mut rng);
    let good = Tensor::randn(&[2, 3, 3, 3], 1.0, &mut rng);
    let bad = Tensor::randn(&[2, 3, 3, 4], 1.0, &mut rng);
    let sp = pool_spec(3, 2, 1);
    let shape_e = |e: Error| matches!(e, Error::Shape { .. });
    assert!(max_backward(be, &xt, &good, sp).is_ok());
    assert!(shape_e(max_backward(be, &xt, &bad, sp).unwrap_err()));
    assert!(be.avg_pool2d_backward(&good, sp, &[2, 3, 6, 6], 1).is_ok());
    assert!(shape_e(
        be.avg_pool2d_backward(&bad, sp, &[2, 3, 6, 6], 1)
            .unwrap_err()
    ));
    assert!(shape_e(
        be.avg_pool2d_backward(&good, sp, &[3, 6, 6], 1)
            .unwrap_err()
    ));
    let g2 = Tensor::randn(&[2, 3], 1.0, &mut rng);
    assert!(be.global_avg_pool_backward(&g2, &[2, 3, 6, 6], 1).is_ok());
    assert!(shape_e(
        be.global_avg_pool_backward(&g2, &[2, 4, 6, 6], 1)
            .unwrap_err()
    ));
    assert!(shape_e(
        be.global_avg_pool_backward(&g2, &[2, 3, 6], 1).unwrap_err()
    ));
    assert!(shape_e(
        be.global_avg_pool_forward(&Tensor::full(&[2, 3, 0, 4], 1.0))
            .unwrap_err()
    ));
}

/// The argmax of the backend forward is the in-plane offset of the reference's first maximum
/// for every geometry (3x3 and general windows, strides, padding), with all-negative data
/// too, and the backward from it matches the reference routing.
#[test]
fn max_pool_argmax_offsets_match_reference() {
    let be = Device::Cpu.backend().unwrap();
    for (i, &(k, s, p, shape)) in CASES.iter().enumerate() {
        for offset in [0.0, -10.0] {
            let sp = pool_spec(k, s, p);
            let mut rng = Rng::new(800 + i as u64);
            let x = distinct(shape.iter().product(), offset, &mut rng);
            let (y, argmax) = be.max_pool2d_forward(&tensor(&x, &shape), sp).unwrap();
            let (yr, arg) = max_ref(&x, &shape, sp);
            assert_close("argmax forward", &y.to_vec(), &yr, 1e-6);
            let plane = shape[2] * shape[3];
            let want: Vec<f32> = arg.iter().map(|&a| (a % plane) as f32).collect();
            assert_eq!(argmax.to_vec(), want, "{shape:?} {sp:?} offset {offset}");
            assert_eq!(argmax.shape(), y.shape());
            let dy = round32(&randn(yr.len(), &mut rng));
            let dx = be
                .max_pool2d_backward(&argmax, &tensor(&dy, y.shape()), &shape)
                .unwrap();
            assert_close(
                "argmax backward",
                &dx.to_vec(),
                &max_route_ref(&dy, &arg, x.len()),
                1e-6,
            );
        }
    }
}

/// Ties, NaN and all `-inf` windows through the saved offsets: first maximum in row-major
/// order, the (last) NaN, and the first in-image element of an all `-inf` window.
#[test]
fn max_pool_argmax_special_values() {
    let be = Device::Cpu.backend().unwrap();
    let x = Tensor::full(&[1, 1, 4, 4], f32::NEG_INFINITY);
    let (_, a) = be.max_pool2d_forward(&x, pool_spec(3, 1, 1)).unwrap();
    // Window (oh, ow) starts at image row max(oh - 1, 0) and column max(ow - 1, 0).
    let first: Vec<f32> = (0..16)
        .map(|o| ((o / 4).max(1) - 1) * 4 + (o % 4).max(1) - 1)
        .map(|v| v as f32)
        .collect();
    assert_eq!(a.to_vec(), first);
    let x = Tensor::from_vec(vec![0.0, 2.0, 1.0, 2.0], &[1, 1, 2, 2]).unwrap();
    let (_, a) = be.max_pool2d_forward(&x, pool_spec(2, 1, 0)).unwrap();
    assert_eq!(a.to_vec(), vec![1.0]);
    let x = Tensor::from_vec(vec![f32::NAN, 2.0, f32::NAN, 9.0], &[1, 1, 2, 2]).unwrap();
    let (y, a) = be.max_pool2d_forward(&x, pool_spec(2, 1, 0)).unwrap();
    assert!(y.to_vec()[0].is_nan());
    assert_eq!(a.to_vec(), vec![2.0]);
}

#[test]
fn max_pool_backward_rejects_bad_offsets_and_shapes() {
    let be = Device::Cpu.backend().unwrap();
    let x_shape = [1, 2, 3, 3];
    let dy = Tensor::full(&[1, 2, 2, 2], 1.0);
    let ok = Tensor::from_vec(vec![0.0, 1.0, 3.0, 8.0, 4.0, 4.0, 4.0, 4.0], &[1, 2, 2, 2]).unwrap();
    let dx = be.max_pool2d_backward(&ok, &dy, &x_shape).unwrap().to_vec();
    let mut want = vec![0.0f32; 18];
    for i in [0, 1, 3, 8] {
        want[i] = 1.0;
    }
    want[9 + 4] = 4.0;
    assert_eq!(dx, want);
    for bad in [9.0, -1.0, f32::NAN, 1e9] {
        let mut v = ok.to_vec();
        v[5] = bad;
        let a = Tensor::from_vec(v, &[1, 2, 2, 2]).unwrap();
        assert!(
            matches!(
                be.max_pool2d_backward(&a, &dy, &x_shape),
                Err(Error::Invalid(_))
            ),
            "offset {bad}"
        );
    }
    let is_shape = |r: Result<Tensor>| matches!(r, Err(Error::Shape { .. }));
    assert!(is_shape(be.max_pool2d_backward(
        &Tensor::full(&[1, 2, 2, 1], 0.0),
        &dy,
        &x_shape
    )));
    assert!(is_shape(be.max_pool2d_backward(&ok, &dy, &[1, 3, 3, 3])));
    assert!(is_shape(be.max_pool2d_backward(&ok, &dy, &[2, 3, 3])));
}
