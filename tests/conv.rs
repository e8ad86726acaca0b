//! conv2d against naive f64 references: forward, finite-difference gradients of the f64
//! reference loss, the curvature recursion, supernet-sized fast paths, determinism and
//! shape errors.

mod common;

use bayesnas_engine::prelude::*;
use bayesnas_engine::Backend;
use common::*;

/// One convolution geometry: `x: [n, c_in, h, w]`, `w: [c_out, c_in / g, k, k]`.
#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    n: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
    d: usize,
    g: usize,
}

#[allow(clippy::too_many_arguments)]
const fn case(
    name: &'static str,
    c_in: usize,
    c_out: usize,
    (h, w): (usize, usize),
    k: usize,
    s: usize,
    p: usize,
    d: usize,
    g: usize,
) -> Case {
    Case {
        name,
        n: 2,
        c_in,
        c_out,
        h,
        w,
        k,
        s,
        p,
        d,
        g,
    }
}

impl Case {
    fn spec(&self) -> Conv2dSpec {
        Conv2dSpec::new()
            .stride(self.s)
            .padding(self.p)
            .dilation(self.d)
            .groups(self.g)
    }
    fn out(&self, len: usize) -> usize {
        (len + 2 * self.p - self.d * (self.k - 1) - 1) / self.s + 1
    }
    fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c_in, self.h, self.w]
    }
    fn w_shape(&self) -> [usize; 4] {
        [self.c_out, self.c_in / self.g, self.k, self.k]
    }
    fn y_shape(&self) -> [usize; 4] {
        [self.n, self.c_out, self.out(self.h), self.out(self.w)]
    }
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Calls `f(x_index, w_index, y_index)` for every term `w * x` of every output: the
/// convolution written out as seven plain loops.
fn for_each_term(c: &Case, mut f: impl FnMut(usize, usize, usize)) {
    let (ho, wo) = (c.out(c.h), c.out(c.w));
    let (cig, cog) = (c.c_in / c.g, c.c_out / c.g);
    for n in 0..c.n {
        for o in 0..c.c_out {
            for i in 0..ho {
                for j in 0..wo {
                    for ci in 0..cig {
                        for a in 0..c.k {
                            for b in 0..c.k {
                                let ih = (i * c.s + a * c.d) as isize - c.p as isize;
                                let iw = (j * c.s + b * c.d) as isize - c.p as isize;
                                if ih < 0 || iw < 0 || ih >= c.h as isize || iw >= c.w as isize {
                                    continue;
                                }
                                let cin = o / cog * cig + ci;
                                let xi =
                                    ((n * c.c_in + cin) * c.h + ih as usize) * c.w + iw as usize;
                                let wi = ((o * cig + ci) * c.k + a) * c.k + b;
                                let yi = ((n * c.c_out + o) * ho + i) * wo + j;
                                f(xi, wi, yi);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn ref_forward(c: &Case, x: &[f64], w: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; numel(&c.y_shape())];
    for_each_term(c, |xi, wi, yi| y[yi] += w[wi] * x[xi]);
    y
}

/// `(dx, dw)` of the reference for an output gradient `dy`.
fn ref_backward(c: &Case, x: &[f64], w: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    for_each_term(c, |xi, wi, yi| {
        dx[xi] += dy[yi] * w[wi];
        dw[wi] += dy[yi] * x[xi];
    });
    (dx, dw)
}

/// The diagonal curvature recursion of the method note: `hx` gathers `hy w^2` over every
/// term an input takes part in, `hw` gathers `x^2 hy`.
fn ref_curvature(c: &Case, x: &[f64], w: &[f64], hy: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut hx = vec![0.0; x.len()];
    let mut hw = vec![0.0; w.len()];
    for_each_term(c, |xi, wi, yi| {
        hx[xi] += hy[yi] * w[wi] * w[wi];
        hw[wi] += x[xi] * x[xi] * hy[yi];
    });
    (hx, hw)
}

const FWD_RTOL: f64 = 1e-5;
/// The loss is quadratic in `x` and in `w` (the convolution is linear in each), so central
/// differences of the f64 reference are exact up to f64 rounding; the error left is the
/// engine's f32 arithmetic.
const GRAD_RTOL: f64 = 1e-4;
const CURV_RTOL: f64 = 1e-4;
const FD_EPS: f64 = 1e-3;

/// Forward, gradient and curvature checks of one case through the tape.
fn check_case(c: &Case, seed: u64) {
    let mut rng = Rng::new(seed);
    let (xs, ws, ys) = (c.x_shape(), c.w_shape(), c.y_shape());
    let x = round32(&randn(numel(&xs), &mut rng));
    let w = round32(&randn(numel(&ws), &mut rng));
    let y_ref = ref_forward(c, &x, &w);
    let loss = LossSpec::new(y_ref.len(), &mut rng);

    let mut tape = Tape::new();
    let xv = tape.leaf(tensor(&x, &xs));
    let wv = tape.leaf(tensor(&w, &ws));
    let y = tape.conv2d(xv, wv, c.spec()).unwrap();
    assert_eq!(tape.value(y).shape(), &ys, "{}: output shape", c.name);
    assert_close(
        &format!("{}: forward", c.name),
        tape.value(y).cpu(),
        &y_ref,
        FWD_RTOL,
    );
    let l = loss.record(&mut tape, y);
    assert!(
        (f64::from(tape.value(l).item().unwrap()) - loss.eval(&y_ref)).abs()
            <= 1e-4 * loss.eval(&y_ref),
        "{}: loss value",
        c.name
    );

    let grads = tape.backward(l).unwrap();
    let fd_dx = fd_grad(&|xp| loss.eval(&ref_forward(c, xp, &w)), &x, FD_EPS);
    let fd_dw = fd_grad(&|wp| loss.eval(&ref_forward(c, &x, wp)), &w, FD_EPS);
    assert_close(
        &format!("{}: dx", c.name),
        grads.leaf(xv).unwrap().cpu(),
        &fd_dx,
        GRAD_RTOL,
    );
    assert_close(
        &format!("{}: dw", c.name),
        grads.leaf(wv).unwrap().cpu(),
        &fd_dw,
        GRAD_RTOL,
    );

    let curv = tape.curvature_backward(l).unwrap();
    let (hx, hw) = ref_curvature(c, &x, &w, &loss.weights);
    assert_close(
        &format!("{}: hx", c.name),
        curv.leaf(xv).unwrap().cpu(),
        &hx,
        CURV_RTOL,
    );
    assert_close(
        &format!("{}: hw", c.name),
        curv.leaf(wv).unwrap().cpu(),
        &hw,
        CURV_RTOL,
    );
}

fn check_all(cases: &[Case], seed: u64) {
    for (i, c) in cases.iter().enumerate() {
        check_case(c, seed + i as u64);
    }
}

#[test]
fn dense_convolutions() {
    check_all(
        &[
            case("dense3x3_s1_p1", 3, 4, (5, 5), 3, 1, 1, 1, 1),
            case("dense3x3_s2_p1_odd", 3, 4, (7, 9), 3, 2, 1, 1, 1),
            case("dense3x3_s2_p1_even", 2, 3, (8, 6), 3, 2, 1, 1, 1),
            case("dense3x3_s1_p0_odd", 2, 3, (7, 9), 3, 1, 0, 1, 1),
            case("dense3x3_s1_p2_edges", 2, 3, (5, 5), 3, 1, 2, 1, 1),
            case("dense5x5_s2_p1", 2, 3, (8, 7), 5, 2, 1, 1, 1),
            case("dense3x3_s3_p1", 2, 2, (10, 8), 3, 3, 1, 1, 1),
            case("dense2x2_s1_p1_even_kernel", 2, 3, (5, 6), 2, 1, 1, 1, 1),
        ],
        100,
    );
}

#[test]
fn dilated_convolutions() {
    check_all(
        &[
            case("dense3x3_d2_p2", 2, 3, (7, 7), 3, 1, 2, 2, 1),
            case("dense5x5_d2_p4", 2, 2, (9, 9), 5, 1, 4, 2, 1),
            case("dense3x3_d2_p2_s2", 2, 3, (9, 8), 3, 2, 2, 2, 1),
            case("dense3x3_d3_p1_s1", 2, 2, (8, 9), 3, 1, 1, 3, 1),
        ],
        200,
    );
}

#[test]
fn depthwise_convolutions() {
    check_all(
        &[
            case("dw3x3_s1_p1", 3, 3, (7, 9), 3, 1, 1, 1, 3),
            case("dw3x3_s2_p1_even", 3, 3, (8, 8), 3, 2, 1, 1, 3),
            case("dw3x3_s2_p1_odd", 3, 3, (7, 9), 3, 2, 1, 1, 3),
            case("dw5x5_s1_p2", 3, 3, (7, 9), 5, 1, 2, 1, 3),
            case("dw5x5_s2_p2", 3, 3, (9, 8), 5, 2, 2, 1, 3),
            case("dw3x3_d2_s1_p2", 3, 3, (7, 9), 3, 1, 2, 2, 3),
            case("dw3x3_d2_s2_p2", 3, 3, (8, 9), 3, 2, 2, 2, 3),
            case("dw5x5_d2_s1_p4", 3, 3, (9, 9), 5, 1, 4, 2, 3),
            case("dw5x5_d2_s2_p4", 3, 3, (9, 10), 5, 2, 4, 2, 3),
            case("dw3x3_s1_p0_valid", 3, 3, (6, 7), 3, 1, 0, 1, 3),
            case("dw3x3_s3_p1", 3, 3, (10, 11), 3, 3, 1, 1, 3),
            case("dw3x3_s1_p3_pad_beyond_kernel", 3, 3, (5, 6), 3, 1, 3, 1, 3),
            case("dw3x3_wide_row_40", 2, 2, (3, 40), 3, 1, 1, 1, 2),
        ],
        300,
    );
}

#[test]
fn pointwise_convolutions() {
    check_all(
        &[
            case("pw1x1_s1", 4, 6, (5, 7), 1, 1, 0, 1, 1),
            case("pw1x1_s2_odd", 4, 6, (7, 9), 1, 2, 0, 1, 1),
            case("pw1x1_s2_even", 4, 2, (8, 8), 1, 2, 0, 1, 1),
            case("pw1x1_p1", 3, 4, (4, 5), 1, 1, 1, 1, 1),
        ],
        400,
    );
}

#[test]
fn grouped_convolutions() {
    check_all(
        &[
            case("grouped3x3_g2", 6, 4, (6, 7), 3, 1, 1, 1, 2),
            case("grouped3x3_g3_s2", 6, 6, (7, 8), 3, 2, 1, 1, 3),
            case("grouped1x1_g2", 4, 6, (5, 5), 1, 1, 0, 1, 2),
            case("depthwise_multiplier2", 3, 6, (5, 6), 3, 1, 1, 1, 3),
            case("grouped5x5_g2_d2", 4, 2, (9, 9), 5, 1, 4, 2, 2),
        ],
        500,
    );
}

fn backend() -> &'static dyn Backend {
    Device::Cpu.backend().unwrap()
}

/// Supernet-sized fast paths (depthwise, pointwise, stem) against the naive reference for
/// all three kernels.
#[test]
fn supernet_sized_fast_paths_match_reference() {
    let cases = [
        case("dw3x3", 16, 16, (16, 16), 3, 1, 1, 1, 16),
        case("dw3x3_s2", 16, 16, (16, 16), 3, 2, 1, 1, 16),
        case("dw5x5", 16, 16, (16, 16), 5, 1, 2, 1, 16),
        case("dw5x5_s2", 16, 16, (16, 16), 5, 2, 2, 1, 16),
        case("dil3x3", 16, 16, (16, 16), 3, 1, 2, 2, 16),
        case("dil3x3_s2", 16, 16, (16, 16), 3, 2, 2, 2, 16),
        case("dil5x5", 16, 16, (16, 16), 5, 1, 4, 2, 16),
        case("dil5x5_s2", 16, 16, (16, 16), 5, 2, 4, 2, 16),
        case("pw1x1", 16, 32, (16, 16), 1, 1, 0, 1, 1),
        case("pw1x1_s2", 16, 8, (16, 16), 1, 2, 0, 1, 1),
        case("stem3x3", 3, 48, (16, 16), 3, 1, 1, 1, 1),
    ];
    let b = backend();
    for (i, c) in cases.iter().enumerate() {
        let mut rng = Rng::new(600 + i as u64);
        let (xs, ws, ys) = (c.x_shape(), c.w_shape(), c.y_shape());
        let x = round32(&randn(numel(&xs), &mut rng));
        let w = round32(&randn(numel(&ws), &mut rng));
        let dy = round32(&randn(numel(&ys), &mut rng));
        let (xt, wt, dyt) = (tensor(&x, &xs), tensor(&w, &ws), tensor(&dy, &ys));
        let y = b.conv2d_forward(&xt, &wt, c.spec()).unwrap();
        assert_eq!(y.shape(), &ys, "{}", c.name);
        assert_close(
            &format!("{}: forward", c.name),
            y.cpu(),
            &ref_forward(c, &x, &w),
            FWD_RTOL,
        );
        let (dx_ref, dw_ref) = ref_backward(c, &x, &w, &dy);
        let dx = b.conv2d_backward_input(&dyt, &wt, c.spec(), &xs).unwrap();
        assert_close(
            &format!("{}: backward_input", c.name),
            dx.cpu(),
            &dx_ref,
            FWD_RTOL,
        );
        let dw = b.conv2d_backward_weight(&xt, &dyt, c.spec(), &ws).unwrap();
        assert_close(
            &format!("{}: backward_weight", c.name),
            dw.cpu(),
            &dw_ref,
            FWD_RTOL,
        );
    }
}

/// Weight gradients (a reduction over the batch) and every other kernel give bitwise the
/// same result whatever the number of threads.
#[test]
fn results_do_not_depend_on_thread_count() {
    let cases = [
        case("dw5x5_d2", 8, 8, (12, 12), 5, 1, 4, 2, 8),
        case("dw3x3_s2", 8, 8, (12, 12), 3, 2, 1, 1, 8),
        case("pw1x1", 8, 16, (12, 12), 1, 1, 0, 1, 1),
        case("dense3x3", 3, 8, (12, 12), 3, 1, 1, 1, 1),
    ];
    let b = backend();
    for c in &cases {
        let mut rng = Rng::new(700);
        let x = Tensor::randn(&c.x_shape(), 1.0, &mut rng);
        let w = Tensor::randn(&c.w_shape(), 1.0, &mut rng);
        let n = 37;
        let mut xs = c.x_shape();
        xs[0] = n;
        let x_big = Tensor::randn(&xs, 1.0, &mut rng);
        let mut ys = c.y_shape();
        ys[0] = n;
        let dy = Tensor::randn(&ys, 1.0, &mut rng);
        let run = |threads: usize| {
            on_threads(threads, || {
                (
                    b.conv2d_forward(&x, &w, c.spec()).unwrap().to_vec(),
                    b.conv2d_backward_input(&dy, &w, c.spec(), &xs)
                        .unwrap()
                        .to_vec(),
                    b.conv2d_backward_weight(&x_big, &dy, c.spec(), &c.w_shape())
                        .unwrap()
                        .to_vec(),
                )
            })
        };
        let one = run(1);
        // The batch of 37 is reduced through chunked partials: check the sum itself too.
        let big = Case { n, ..*c };
        let f64s = |t: &Tensor| t.to_vec().into_iter().map(f64::from).collect::<Vec<_>>();
        let (_, dw_ref) = ref_backward(&big, &f64s(&x_big), &f64s(&w), &f64s(&dy));
        assert_close(
            &format!("{}: batch-37 backward_weight", c.name),
            &one.2,
            &dw_ref,
            FWD_RTOL,
        );
        for threads in [2, 3, 5] {
            assert!(
                run(threads) == one,
                "{}: {threads} threads differ from 1",
                c.name
            );
        }
    }
}

/// The fused weight curvature equals the weight gradient of the explicitly squared input
/// (within 1e-6 of the largest magnitude), at every thread count alike.
#[test]
fn backward_weight_sq_equals_backward_weight_of_squared_input() {
    let cases = [
        case("dw3x3", 8, 8, (16, 16), 3, 1, 1, 1, 8),
        case("dw5x5", 8, 8, (11, 13), 5, 1, 2, 1, 8),
        case("dil3x3", 8, 8, (16, 16), 3, 1, 2, 2, 8),
        case("dw3x3_s2", 8, 8, (16, 16), 3, 2, 1, 1, 8),
        case("dil5x5_s2", 8, 8, (15, 16), 5, 2, 4, 2, 8),
        case("pw1x1", 16, 32, (16, 16), 1, 1, 0, 1, 1),
        case("pw1x1_s2", 16, 8, (16, 16), 1, 2, 0, 1, 1),
        case("dense3x3", 3, 48, (16, 16), 3, 1, 1, 1, 1),
        case("dense3x3_s2", 8, 16, (13, 12), 3, 2, 1, 1, 1),
        case("grouped3x3", 8, 12, (10, 10), 3, 1, 1, 1, 4),
    ];
    let b = backend();
    for (i, c) in cases.iter().enumerate() {
        let mut rng = Rng::new(900 + i as u64);
        let c = Case { n: 5, ..*c };
        let x = Tensor::randn(&c.x_shape(), 1.0, &mut rng);
        let hy = Tensor::randn(&c.y_shape(), 1.0, &mut rng);
        let sq: Vec<f32> = x.to_vec().iter().map(|v| v * v).collect();
        let x2 = Tensor::from_vec(sq, &c.x_shape()).unwrap();
        let want = b
            .conv2d_backward_weight(&x2, &hy, c.spec(), &c.w_shape())
            .unwrap();
        let run = |threads: usize| {
            on_threads(threads, || {
                b.conv2d_backward_weight_sq(&x, &hy, c.spec(), &c.w_shape())
                    .unwrap()
            })
        };
        let got = run(2);
        assert_eq!(got.shape(), want.shape(), "{}", c.name);
        let scale = want.cpu().iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (j, (g, w)) in got.cpu().iter().zip(want.cpu()).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * scale,
                "{}: element {j}: fused {g} vs squared input {w}",
                c.name
            );
        }
        assert!(run(1).to_vec() == got.to_vec(), "{}: thread count", c.name);
    }
}

/// The curvature's input step squares the weight on the fly: bit for bit the input gradient
/// of the explicitly squared weight (the CPU squares in f32 as `unary(Square)`), on random
/// never-zero weights and curvatures, at several thread counts; and it refuses what
/// `conv2d_backward_input` refuses.
#[test]
fn backward_input_sq_equals_backward_input_of_squared_weight() {
    let cases = [
        case("dw3x3", 8, 8, (16, 16), 3, 1, 1, 1, 8),
        case("dil5x5_s2", 8, 8, (15, 16), 5, 2, 4, 2, 8),
        case("pw1x1", 16, 32, (16, 16), 1, 1, 0, 1, 1),
        case("pw1x1_s2", 16, 8, (16, 16), 1, 2, 0, 1, 1),
        case("dense3x3_s2", 8, 16, (13, 12), 3, 2, 1, 1, 1),
        case("grouped3x3", 8, 12, (10, 10), 3, 1, 1, 1, 4),
    ];
    let b = backend();
    for (i, c) in cases.iter().enumerate() {
        let mut rng = Rng::new(950 + i as u64);
        let c = Case { n: 3, ..*c };
        let w = Tensor::randn(&c.w_shape(), 1.0, &mut rng);
        let hy = Tensor::from_vec(
            (0..c.y_shape().iter().product::<usize>())
                .map(|_| rng.uniform_range(0.1, 2.0) as f32)
                .collect(),
            &c.y_shape(),
        )
        .unwrap();
        let sq: Vec<f32> = w.to_vec().iter().map(|v| v * v).collect();
        let w2 = Tensor::from_vec(sq, &c.w_shape()).unwrap();
        let want = b
            .conv2d_backward_input(&hy, &w2, c.spec(), &c.x_shape())
            .unwrap()
            .to_vec();
        assert!(want.iter().any(|&v| v != 0.0), "{}", c.name);
        for threads in [1, 2, 3] {
            let got = on_threads(threads, || {
                b.conv2d_backward_input_sq(&hy, &w, c.spec(), &c.x_shape())
                    .unwrap()
            });
            assert!(
                got.to_vec() == want,
                "{}: {threads} threads: fused square differs from the squared weight",
                c.name
            );
        }
        // A wrong curvature shape is refused, as by the plain input step.
        let bad = Tensor::zeros(&[1, 1, 1, 1], Device::Cpu).unwrap();
        let e = b
            .conv2d_backward_input_sq(&bad, &w, c.spec(), &c.x_shape())
            .unwrap_err();
        assert!(e.to_string().contains("conv2d"), "{}: {e}", c.name);
    }
}

#[test]
fn shape_errors_are_errors_not_panics() {
    let mut rng = Rng::new(800);
    let conv = |xs: &[usize], ws: &[usize], spec: Conv2dSpec| {
        let mut rng = Rng::new(1);
        let mut tape = Tape::new();
        let x = tape.leaf(Tensor::randn(xs, 1.0, &mut rng));
        let w = tape.leaf(Tensor::randn(ws, 1.0, &mut rng));
        tape.conv2d(x, w, spec)
    };
    let s = Conv2dSpec::new();
    let is_shape = |r: Result<Var>| matches!(r, Err(Error::Shape { .. }));
    let is_invalid = |r: Result<Var>| matches!(r, Err(Error::Invalid(_)));
    assert!(is_shape(conv(&[2, 3, 5], &[4, 3, 3, 3], s)), "3-D input");
    assert!(is_shape(conv(&[2, 3, 5, 5], &[4, 3, 3], s)), "3-D weight");
    assert!(
        is_shape(conv(&[2, 3, 5, 5], &[4, 3, 3, 2], s)),
        "non-square kernel"
    );
    assert!(
        is_shape(conv(&[2, 4, 5, 5], &[4, 3, 3, 3], s)),
        "weight channels != C_in"
    );
    assert!(
        is_shape(conv(&[2, 4, 5, 5], &[4, 4, 3, 3], s.groups(2))),
        "weight channels != C_in/groups"
    );
    assert!(
        is_invalid(conv(&[2, 5, 5, 5], &[4, 2, 3, 3], s.groups(2))),
        "C_in % groups"
    );
    assert!(
        is_invalid(conv(&[2, 4, 5, 5], &[3, 2, 3, 3], s.groups(2))),
        "C_out % groups"
    );
    assert!(
        is_invalid(conv(&[2, 3, 3, 3], &[4, 3, 5, 5], s)),
        "kernel larger than input"
    );
    assert!(
        is_invalid(conv(&[2, 3, 5, 5], &[4, 3, 3, 3], s.dilation(3))),
        "dilated kernel larger than input"
    );
    assert!(
        conv(&[2, 3, 3, 3], &[4, 3, 5, 5], s.padding(1)).is_ok(),
        "padding makes it fit"
    );
    assert!(
        is_invalid(conv(&[2, 3, 5, 5], &[4, 3, 3, 3], s.stride(0))),
        "stride 0"
    );
    assert!(
        is_invalid(conv(&[2, 3, 5, 5], &[4, 3, 3, 3], s.dilation(0))),
        "dilation 0"
    );
    assert!(
        is_invalid(conv(&[2, 3, 5, 5], &[4, 3, 3, 3], s.groups(0))),
        "groups 0"
    );
    assert!(
        is_invalid(conv(&[0, 3, 5, 5], &[4, 3, 3, 3], s)),
        "empty batch"
    );

    let b = backend();
    let spec = Conv2dSpec::new().padding(1);
    let x = Tensor::randn(&[2, 3, 5, 5], 1.0, &mut rng);
    let w = Tensor::randn(&[4, 3, 3, 3], 1.0, &mut rng);
    let dy = Tensor::randn(&[2, 4, 5, 5], 1.0, &mut rng);
    let bad_dy = Tensor::randn(&[2, 4, 4, 5], 1.0, &mut rng);
    assert!(b
        .conv2d_backward_input(&dy, &w, spec, &[2, 3, 5, 5])
        .is_ok());
    assert!(matches!(
        b.conv2d_backward_input(&bad_dy, &w, spec, &[2, 3, 5, 5]),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        b.conv2d_backward_input(&dy, &w, spec, &[2, 3, 5]),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        b.conv2d_backward_input(&dy, &w, spec, &[2, 2, 5, 5]),
        Err(Error::Shape { .. })
    ));
    assert!(b
        .conv2d_backward_weight(&x, &dy, spec, &[4, 3, 3, 3])
        .is_ok());
    assert!(matches!(
        b.conv2d_backward_weight(&x, &bad_dy, spec, &[4, 3, 3, 3]),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        b.conv2d_backward_weight(&x, &dy, spec, &[4, 3, 3]),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        b.conv2d_backward_weight(&x, &dy, spec, &[4, 3, 5, 5]),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        b.conv2d_forward(&x, &w, Conv2dSpec::new().padding(1).groups(2)),
        Err(Error::Invalid(_))
    ));
}

/// `Tape::depthwise_pointwise` (one op; one launch forward on CUDA) against `Tape::conv2d`
/// twice, bit for bit on the CPU: output, gradients and curvatures of the input and both
/// weights, under the separable and dilated geometries of the search space, including a
/// frozen input (no input gradient wanted) and a frozen depthwise weight. Also the errors:
/// a first convolution that is not depthwise, a pointwise weight that is not 1x1.
#[test]
fn depthwise_pointwise_equals_two_convolutions_bit_for_bit() {
    let cases = [
        ((2usize, 4usize, 6usize, 8usize), (3usize, 1usize, 1usize)),
        ((2, 4, 4, 7), (5, 2, 1)),
        ((3, 5, 5, 9), (3, 1, 2)),
        ((1, 3, 8, 6), (5, 2, 2)),
    ];
    for (case, ((n, c, co, hw), (k, stride, dil))) in cases.into_iter().enumerate() {
        let mut rng = Rng::new(900 + case as u64);
        let spec = Conv2dSpec::new()
            .stride(stride)
            .padding(dil * (k - 1) / 2)
            .dilation(dil)
            .groups(c);
        let x = Tensor::randn(&[n, c, hw, hw], 1.0, &mut rng);
        let w_dw = Tensor::randn(&[c, 1, k, k], 0.5, &mut rng);
        let w_pw = Tensor::randn(&[co, c, 1, 1], 0.5, &mut rng);
        for frozen in [None, Some(0usize), Some(1)] {
            let run = |fused: bool| {
                let mut tape = Tape::new();
                let leaves = [x.clone(), w_dw.clone(), w_pw.clone()]
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| match frozen == Some(i) {
                        true => tape.input(t),
                        false => tape.leaf(t),
                    })
                    .collect::<Vec<_>>();
                let (xv, dv, pv) = (leaves[0], leaves[1], leaves[2]);
                let y = if fused {
                    tape.depthwise_pointwise(xv, dv, spec, pv).unwrap()
                } else {
                    let mid = tape.conv2d(xv, dv, spec).unwrap();
                    tape.conv2d(mid, pv, Conv2dSpec::new()).unwrap()
                };
                let labels: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
                let pooled = tape.global_avg_pool(y).unwrap();
                let l = tape.cross_entropy(pooled, &labels).unwrap();
                let g = tape.backward(l).unwrap();
                let h = tape.curvature_backward(l).unwrap();
                let mut out = vec![tape.value(y).to_vec()];
                for (i, v) in leaves.iter().enumerate() {
                    if frozen != Some(i) {
                        out.push(g.leaf(*v).unwrap().to_vec());
                        out.push(h.leaf(*v).unwrap().to_vec());
                    }
                }
                out
            };
            let (fused, plain) = (run(true), run(false));
            assert_eq!(fused.len(), plain.len());
            for (i, (f, p)) in fused.iter().zip(&plain).enumerate() {
                assert!(
                    p.iter().any(|v| *v != 0.0),
                    "case {case}: output {i} is all zero"
                );
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(f),
                    bits(p),
                    "case {case} frozen {frozen:?}: output {i} differs"
                );
            }
        }
    }
    // Refusals, with the op named.
    let mut rng = Rng::new(1);
    let mut tape = Tape::new();
    let x = tape.leaf(Tensor::randn(&[1, 4, 5, 5], 1.0, &mut rng));
    let dense = tape.leaf(Tensor::randn(&[4, 4, 3, 3], 1.0, &mut rng));
    let dw = tape.leaf(Tensor::randn(&[4, 1, 3, 3], 1.0, &mut rng));
    let pw = tape.leaf(Tensor::randn(&[4, 4, 1, 1], 1.0, &mut rng));
    let pw3 = tape.leaf(Tensor::randn(&[4, 4, 3, 3], 1.0, &mut rng));
    let err = tape
        .depthwise_pointwise(x, dense, Conv2dSpec::new().padding(1), pw)
        .unwrap_err()
        .to_string();
    assert!(err.contains("depthwise_pointwise_forward"), "{err}");
    let err = tape
        .depthwise_pointwise(x, dw, Conv2dSpec::new().padding(1).groups(4), pw3)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("depthwise_pointwise_forward") && err.contains("1, 1"),
        "{err}"
    );
}
