//! The host-emulated CUDA kernels against the engine's CPU backend, on random shapes and
//! random (never zero) values. Tolerance: max |got - want| <= 1e-4 * max |want| per tensor.

use bayesnas_engine::device::{Binary, SgdStep, Unary};
use bayesnas_engine::{Conv2dSpec, Pool2dSpec, Rng, Tensor};
use bayesnas_kernel_emulation::*;

mod common;
use common::*;

// ---------------------------------------------------------------------------------------
// elementwise.cu
// ---------------------------------------------------------------------------------------

#[test]
fn elementwise_maps_and_reductions() {
    let mut rng = Rng::new(1);
    for &n in &[1usize, 255, 1000, 4099] {
        let mut a = rvec(n, &mut rng);
        a[0] = 1.25; // at least one positive value (relu)
        let b = rvec(n, &mut rng);
        let (ta, tb) = (t(&a, &[n]), t(&b, &[n]));
        let mut y = vec![0.0f32; n];
        let grid = (rng.below(4) + 1) as u32;
        let alpha = 0.75f32;
        for (op, u) in [
            (EW_UNARY_RELU, Unary::Relu),
            (EW_UNARY_SQUARE, Unary::Square),
            (EW_UNARY_SCALE, Unary::Scale(alpha)),
        ] {
            let p = EwParams {
                n: n as i64,
                op,
                alpha,
                ..Default::default()
            };
            unsafe { host_ew_unary(Launch::d1(grid, B), a.as_ptr(), y.as_mut_ptr(), p) };
            close(
                &format!("unary {op}"),
                &y,
                cpu().unary(&ta, u).unwrap().cpu(),
            );
        }
        let ops = [
            (EW_BINARY_ADD, Binary::Add),
            (EW_BINARY_SUB, Binary::Sub),
            (EW_BINARY_MUL, Binary::Mul),
            (EW_BINARY_RELU_MASK, Binary::ReluMask),
        ];
        for (op, bop) in ops {
            let p = EwParams {
                n: n as i64,
                op,
                ..Default::default()
            };
            unsafe {
                host_ew_binary(
                    Launch::d1(grid, B),
                    a.as_ptr(),
                    b.as_ptr(),
                    y.as_mut_ptr(),
                    p,
                )
            };
            close(
                &format!("binary {op}"),
                &y,
                cpu().binary(&ta, &tb, bop).unwrap().cpu(),
            );
        }
        let mut yy = b.clone();
        let p = EwParams {
            n: n as i64,
            alpha,
            ..Default::default()
        };
        unsafe { host_ew_axpy(Launch::d1(grid, B), a.as_ptr(), yy.as_mut_ptr(), p) };
        let mut want = tb.clone();
        cpu().axpy(alpha, &ta, &mut want).unwrap();
        close("axpy", &yy, want.cpu());
        unsafe { host_fill(Launch::d1(grid, B), y.as_mut_ptr(), p) };
        assert!(y.iter().all(|&v| v == alpha), "fill");
        // scale_samples over [n / inner samples, inner]
        if n % 5 == 0 {
            let ns = 5;
            let scale = rvec(ns, &mut rng);
            let p = EwParams {
                n: n as i64,
                inner: (n / ns) as i64,
                ..Default::default()
            };
            unsafe {
                host_scale_samples(
                    Launch::d1(grid, B),
                    a.as_ptr(),
                    scale.as_ptr(),
                    y.as_mut_ptr(),
                    p,
                )
            };
            let want = cpu().scale_samples(&t(&a, &[ns, n / ns]), &scale).unwrap();
            close("scale_samples", &y, want.cpu());
        }
        // deterministic partial sums
        let blocks = (rng.below(5) + 1) as i64;
        let mut part = vec![0.0f64; blocks as usize];
        let p = ReduceParams {
            n: n as i64,
            blocks,
        };
        let l = Launch::d1(blocks as u32, B);
        unsafe { host_reduce_dot_partial(l, a.as_ptr(), std::ptr::null(), part.as_mut_ptr(), p) };
        close64(
            "sum_all",
            part.iter().sum(),
            cpu().sum_all(&ta).unwrap(),
            1e-9,
        );
        unsafe { host_reduce_dot_partial(l, a.as_ptr(), b.as_ptr(), part.as_mut_ptr(), p) };
        close64("dot", part.iter().sum(), cpu().dot(&ta, &tb).unwrap(), 1e-9);
    }
}

// ---------------------------------------------------------------------------------------
// depthwise.cu and conv_direct.cu
// ---------------------------------------------------------------------------------------

struct ConvCase {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    spec: Conv2dSpec,
}

impl ConvCase {
    fn out(&self) -> (usize, usize) {
        (
            self.spec.out_size(self.h, self.k),
            self.spec.out_size(self.w, self.k),
        )
    }
    fn dw(&self) -> DwParams {
        dw_params(self.n, self.c, self.h, self.w, self.k, self.spec)
    }
}

fn check_depthwise(case: &ConvCase, rng: &mut Rng) {
    let (n, c, h, w, k) = (case.n, case.c, case.h, case.w, case.k);
    let (ho, wo) = case.out();
    let what = format!(
        "dw n{n} c{c} {h}x{w} k{k} s{} p{} d{}",
        case.spec.stride, case.spec.padding, case.spec.dilation
    );
    let spec = case.spec.groups(c);
    let x = rvec(n * c * h * w, rng);
    let wt = rvec(c * k * k, rng);
    let dy = rvec(n * c * ho * wo, rng);
    let xs = [n, c, h, w];
    let ws = [c, 1, k, k];
    let (tx, tw, tdy) = (t(&x, &xs), t(&wt, &ws), t(&dy, &[n, c, ho, wo]));
    let mut p = case.dw();
    let gx = (rng.below(3) + 1) as u32;
    let l = Launch::d3(gx, c as u32, n as u32, B);

    let mut y = vec![f32::NAN; n * c * ho * wo];
    unsafe { host_dw_conv_fwd(l, x.as_ptr(), wt.as_ptr(), y.as_mut_ptr(), p) };
    let want_y = cpu().conv2d_forward(&tx, &tw, spec).unwrap();
    close(&format!("{what} fwd"), &y, want_y.cpu());
    if k == 3 {
        let mut y3 = vec![f32::NAN; y.len()];
        unsafe { host_dw_conv_fwd_k3(l, x.as_ptr(), wt.as_ptr(), y3.as_mut_ptr(), p) };
        assert_eq!(y3, y, "{what}: fwd_k3 differs from fwd");
    }

    let mut dx = vec![f32::NAN; n * c * h * w];
    for square in [0, 1] {
        p.square_w = square;
        unsafe { host_dw_conv_bwd_input(l, dy.as_ptr(), wt.as_ptr(), dx.as_mut_ptr(), p) };
        let wref = if square == 1 {
            cpu().unary(&tw, Unary::Square).unwrap()
        } else {
            tw.clone()
        };
        let want = cpu().conv2d_backward_input(&tdy, &wref, spec, &xs).unwrap();
        close(&format!("{what} bwd_input sq{square}"), &dx, want.cpu());
    }
    p.square_w = 0;

    let mut dw = vec![f32::NAN; c * k * k];
    for square in [0, 1] {
        p.square_x = square;
        let want = if square == 1 {
            cpu()
                .conv2d_backward_weight_sq(&tx, &tdy, spec, &ws)
                .unwrap()
        } else {
            cpu().conv2d_backward_weight(&tx, &tdy, spec, &ws).unwrap()
        };
        unsafe {
            host_dw_conv_bwd_weight(
                Launch::d1(c as u32, B),
                x.as_ptr(),
                dy.as_ptr(),
                dw.as_mut_ptr(),
                p,
            )
        };
        close(&format!("{what} bwd_weight sq{square}"), &dw, want.cpu());
        // split form
        p.splits = (rng.below(n) + 1) as i32;
        let mut part = vec![f32::NAN; c * p.splits as usize * k * k];
        let mut dw2 = vec![f32::NAN; c * k * k];
        unsafe {
            host_dw_conv_bwd_weight_partial(
                Launch::d3(c as u32, p.splits as u32, 1, B),
                x.as_ptr(),
                dy.as_ptr(),
                part.as_mut_ptr(),
                p,
            );
            host_dw_conv_bwd_weight_finalize(Launch::d1(1, B), part.as_ptr(), dw2.as_mut_ptr(), p);
        }
        close(
            &format!("{what} bwd_weight split{} sq{square}", p.splits),
            &dw2,
            want.cpu(),
        );
    }
}

#[test]
fn depthwise_all_templated_geometries() {
    let mut rng = Rng::new(2);
    for k in [3usize, 5] {
        for d in [1usize, 2] {
            for s in [1usize, 2] {
                let pad = pick(&mut rng, &[0, 1, d * (k - 1) / 2]);
                let min = d * (k - 1) + 1;
                let h = (min.max(2 * pad + 1) + rng.below(12)).max(min);
                let w = (min + rng.below(14)).max(min);
                let spec = Conv2dSpec::new().stride(s).padding(pad).dilation(d);
                let case = ConvCase {
                    n: 2,
                    c: 3,
                    h,
                    w,
                    k,
                    spec,
                };
                check_depthwise(&case, &mut rng);
            }
        }
    }
}

#[test]
fn depthwise_large_planes_and_generic_path() {
    let mut rng = Rng::new(3);
    // 32-wide tiles with two rows per thread, several tiles per plane.
    for (h, w, k, s, d, pad) in [
        (36usize, 40usize, 3usize, 1usize, 1usize, 1usize),
        (35, 33, 5, 1, 2, 4),
        (70, 37, 3, 2, 1, 1),
        (16, 16, 3, 1, 1, 1),
        (32, 32, 5, 2, 1, 2),
        // 16-wide tiles with four rows per thread; the largest shared tile (135 x 39)
        (70, 14, 3, 1, 1, 1),
        (140, 30, 5, 2, 2, 4),
    ] {
        let spec = Conv2dSpec::new().stride(s).padding(pad).dilation(d);
        check_depthwise(
            &ConvCase {
                n: 2,
                c: 2,
                h,
                w,
                k,
                spec,
            },
            &mut rng,
        );
    }
    // untemplated geometries: global-memory path
    for (k, s, d, pad) in [(7usize, 1usize, 1usize, 3usize), (3, 3, 1, 1), (3, 1, 3, 3)] {
        let spec = Conv2dSpec::new().stride(s).padding(pad).dilation(d);
        check_depthwise(
            &ConvCase {
                n: 2,
                c: 2,
                h: 13,
                w: 11,
                k,
                spec,
            },
            &mut rng,
        );
    }
}

#[test]
fn direct_conv_any_geometry_and_im2col() {
    let mut rng = Rng::new(4);
    for case in 0..8 {
        let groups = pick(&mut rng, &[1usize, 2, 3]);
        let cig = rng.below(3) + 1;
        let cog = rng.below(3) + 1;
        let (c_in, c_out) = (groups * cig, groups * cog);
        let k = pick(&mut rng, &[1usize, 3, 5]);
        let s = pick(&mut rng, &[1usize, 2]);
        let d = pick(&mut rng, &[1usize, 2]);
        let pad = rng.below(3);
        let min = d * (k - 1) + 1;
        let (h, w) = (min + rng.below(8), min + rng.below(9));
        let n = rng.below(2) + 1;
        let spec = Conv2dSpec::new()
            .stride(s)
            .padding(pad)
            .dilation(d)
            .groups(groups);
        let (ho, wo) = (spec.out_size(h, k), spec.out_size(w, k));
        let what = format!("conv#{case} g{groups} {c_in}->{c_out} {h}x{w} k{k} s{s} p{pad} d{d}");
        let x = rvec(n * c_in * h * w, &mut rng);
        let wt = rvec(c_out * cig * k * k, &mut rng);
        let dy = rvec(n * c_out * ho * wo, &mut rng);
        let (xs, ws) = ([n, c_in, h, w], [c_out, cig, k, k]);
        let (tx, tw, tdy) = (t(&x, &xs), t(&wt, &ws), t(&dy, &[n, c_out, ho, wo]));
        let mut p = ConvParams {
            n: n as i64,
            c_in: c_in as i64,
            c_out: c_out as i64,
            h: h as i64,
            w: w as i64,
            ho: ho as i64,
            wo: wo as i64,
            k: k as i32,
            stride: s as i32,
            padding: pad as i32,
            dilation: d as i32,
            groups: groups as i32,
            ..Default::default()
        };
        let l = Launch::d1(3, B);
        let mut y = vec![f32::NAN; n * c_out * ho * wo];
        unsafe { host_conv_fwd_direct(l, x.as_ptr(), wt.as_ptr(), y.as_mut_ptr(), p) };
        let want_y = cpu().conv2d_forward(&tx, &tw, spec).unwrap();
        close(&format!("{what} fwd"), &y, want_y.cpu());
        let mut dx = vec![f32::NAN; n * c_in * h * w];
        unsafe { host_conv_bwd_input_direct(l, dy.as_ptr(), wt.as_ptr(), dx.as_mut_ptr(), p) };
        let want = cpu().conv2d_backward_input(&tdy, &tw, spec, &xs).unwrap();
        close(&format!("{what} bwd_input"), &dx, want.cpu());
        let mut dw = vec![f32::NAN; c_out * cig * k * k];
        for square in [0, 1] {
            p.square_x = square;
            unsafe { host_conv_bwd_weight_direct(l, x.as_ptr(), dy.as_ptr(), dw.as_mut_ptr(), p) };
            let want = if square == 1 {
                cpu()
                    .conv2d_backward_weight_sq(&tx, &tdy, spec, &ws)
                    .unwrap()
            } else {
                cpu().conv2d_backward_weight(&tx, &tdy, spec, &ws).unwrap()
            };
            close(&format!("{what} bwd_weight sq{square}"), &dw, want.cpu());
        }
        p.square_x = 0;
        // im2col: per sample W_g x col_g reproduces the forward; col2im is its adjoint.
        let (kk, per) = (k * k, ho * wo);
        let mut col = vec![f32::NAN; n * c_in * kk * per];
        unsafe { host_im2col(l, x.as_ptr(), col.as_mut_ptr(), p) };
        let mut y2 = vec![0.0f32; n * c_out * per];
        for nn in 0..n {
            for co in 0..c_out {
                let g = co / cog;
                for o in 0..per {
                    let mut acc = 0.0f64;
                    for r in 0..cig * kk {
                        let row = g * cig * kk + r;
                        acc += wt[co * cig * kk + r] as f64
                            * col[(nn * c_in * kk + row) * per + o] as f64;
                    }
                    y2[(nn * c_out + co) * per + o] = acc as f32;
                }
            }
        }
        close(&format!("{what} im2col gemm"), &y2, want_y.cpu());
        let cvals = rvec(col.len(), &mut rng);
        let mut back = vec![f32::NAN; x.len()];
        unsafe { host_col2im(l, cvals.as_ptr(), back.as_mut_ptr(), p) };
        let lhs: f64 = col
            .iter()
            .zip(&cvals)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        let rhs: f64 = x
            .iter()
            .zip(&back)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        let mag: f64 = col
            .iter()
            .zip(&cvals)
            .map(|(&a, &b)| (a as f64 * b as f64).abs())
            .sum();
        assert!(
            (lhs - rhs).abs() <= 1e-5 * mag,
            "{what}: col2im adjoint {lhs} vs {rhs}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// batchnorm.cu
// ---------------------------------------------------------------------------------------

#[test]
fn batch_norm_stats_forward_backward_sums() {
    let mut rng = Rng::new(5);
    for (n, c, h, w) in [
        (2usize, 3usize, 5usize, 7usize),
        (4, 2, 16, 17),
        (3, 5, 1, 1),
    ] {
        let what = format!("bn {n}x{c}x{h}x{w}");
        let s = h * w;
        let shape = [n, c, h, w];
        let x: Vec<f32> = rvec(n * c * s, &mut rng)
            .iter()
            .map(|v| 3.0 + 2.0 * v)
            .collect();
        let dy = rvec(n * c * s, &mut rng);
        let wt = rvec(c, &mut rng);
        let bias = rvec(c, &mut rng);
        let (tx, tdy, tw, tb) = (t(&x, &shape), t(&dy, &shape), t(&wt, &[c]), t(&bias, &[c]));
        let eps = 1e-5f32;
        let f = cpu()
            .batch_norm_train_forward(&tx, Some(&tw), Some(&tb), eps)
            .unwrap();
        let p = BnParams {
            n: n as i64,
            c: c as i64,
            s: s as i64,
            eps,
            ..Default::default()
        };
        let (mean, var, invstd) = bn_stats(Launch::d1(c as u32, B), &x, c, p);
        close(&format!("{what} mean"), &mean, f.mean.cpu());
        close(&format!("{what} var"), &var, f.var.cpu());
        close(&format!("{what} invstd"), &invstd, f.invstd.cpu());
        for splits in [1usize, 2, n] {
            let sp = BnParams {
                splits: splits as i32,
                ..p
            };
            let mut part = vec![f64::NAN; 2 * c * splits];
            let (mut m2, mut v2, mut i2) =
                (vec![f32::NAN; c], vec![f32::NAN; c], vec![f32::NAN; c]);
            unsafe {
                host_bn_stats_partial(
                    Launch::d3(c as u32, splits as u32, 1, B),
                    x.as_ptr(),
                    part.as_mut_ptr(),
                    sp,
                );
                host_bn_stats_finalize(
                    Launch::d1(1, B),
                    x.as_ptr(),
                    part.as_ptr(),
                    m2.as_mut_ptr(),
                    v2.as_mut_ptr(),
                    i2.as_mut_ptr(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    sp,
                );
            }
            close(&format!("{what} mean split{splits}"), &m2, f.mean.cpu());
            close(&format!("{what} var split{splits}"), &v2, f.var.cpu());
            close(&format!("{what} invstd split{splits}"), &i2, f.invstd.cpu());
        }
        let l = Launch::d1(2, B);
        let mut y = vec![f32::NAN; x.len()];
        unsafe {
            host_bn_fwd_apply(
                l,
                x.as_ptr(),
                mean.as_ptr(),
                invstd.as_ptr(),
                wt.as_ptr(),
                bias.as_ptr(),
                y.as_mut_ptr(),
                p,
            )
        };
        close(&format!("{what} y"), &y, f.y.cpu());
        for with_shift in [false, true] {
            let shift = if with_shift {
                bias.as_ptr()
            } else {
                std::ptr::null()
            };
            unsafe { host_channel_affine(l, x.as_ptr(), wt.as_ptr(), shift, y.as_mut_ptr(), p) };
            let want = cpu()
                .channel_affine(&tx, &tw, with_shift.then_some(&tb))
                .unwrap();
            close(&format!("{what} affine {with_shift}"), &y, want.cpu());
        }
        for with_w in [false, true] {
            let g = cpu()
                .batch_norm_backward(&tdy, &tx, &f.mean, &f.invstd, with_w.then_some(&tw))
                .unwrap();
            let (mv, iv) = (f.mean.cpu(), f.invstd.cpu());
            let (sd, sdx) = bn_bwd_reduce(Launch::d1(c as u32, B), &dy, &x, mv, iv, c, p);
            close(&format!("{what} dbias"), &sd, g.dbias.cpu());
            close(&format!("{what} dweight"), &sdx, g.dweight.cpu());
            for splits in [1usize, n] {
                let sp = BnParams {
                    splits: splits as i32,
                    ..p
                };
                let mut part = vec![f64::NAN; 2 * c * splits];
                let (mut sd2, mut sdx2) = (vec![f32::NAN; c], vec![f32::NAN; c]);
                unsafe {
                    host_bn_bwd_partial(
                        Launch::d3(c as u32, splits as u32, 1, B),
                        dy.as_ptr(),
                        x.as_ptr(),
                        mv.as_ptr(),
                        part.as_mut_ptr(),
                        sp,
                    );
                    host_bn_bwd_finalize(
                        Launch::d1(1, B),
                        part.as_ptr(),
                        iv.as_ptr(),
                        sd2.as_mut_ptr(),
                        sdx2.as_mut_ptr(),
                        sp,
                    );
                }
                close(&format!("{what} dbias split{splits}"), &sd2, g.dbias.cpu());
                close(
                    &format!("{what} dweight split{splits}"),
                    &sdx2,
                    g.dweight.cpu(),
                );
            }
            let wp = if with_w {
                wt.as_ptr()
            } else {
                std::ptr::null()
            };
            let mut dx = vec![f32::NAN; x.len()];
            unsafe {
                host_bn_bwd_apply(
                    l,
                    dy.as_ptr(),
                    x.as_ptr(),
                    mv.as_ptr(),
                    iv.as_ptr(),
                    wp,
                    sd.as_ptr(),
                    sdx.as_ptr(),
                    dx.as_mut_ptr(),
                    p,
                )
            };
            close(&format!("{what} dx w{with_w}"), &dx, g.dx.cpu());
        }
        for with_y in [false, true] {
            let mut out = vec![0.0f32; c];
            let yp = if with_y {
                dy.as_ptr()
            } else {
                std::ptr::null()
            };
            unsafe {
                host_channel_sums(Launch::d1(c as u32, B), x.as_ptr(), yp, out.as_mut_ptr(), p)
            };
            let want = cpu().channel_sums(&tx, with_y.then_some(&tdy)).unwrap();
            close(&format!("{what} channel_sums {with_y}"), &out, want.cpu());
            for splits in [1usize, n] {
                let sp = BnParams {
                    splits: splits as i32,
                    ..p
                };
                let mut part = vec![f64::NAN; c * splits];
                unsafe {
                    host_channel_sums_partial(
                        Launch::d3(c as u32, splits as u32, 1, B),
                        x.as_ptr(),
                        yp,
                        part.as_mut_ptr(),
                        sp,
                    );
                    host_channel_sums_finalize(
                        Launch::d1(1, B),
                        part.as_ptr(),
                        out.as_mut_ptr(),
                        sp,
                    );
                }
                close(
                    &format!("{what} channel_sums split{splits} {with_y}"),
                    &out,
                    want.cpu(),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// pool.cu
// ---------------------------------------------------------------------------------------

#[test]
fn pooling_max_avg_global() {
    let mut rng = Rng::new(6);
    for case in 0..10 {
        let k = pick(&mut rng, &[1usize, 2, 3, 5]);
        let s = pick(&mut rng, &[1usize, 2, 3]);
        let pad = rng.below(k / 2 + 1);
        let (n, c) = (2usize, 2usize);
        let h = (k + rng.below(9)).max(1);
        let w = (k + rng.below(10)).max(1);
        let spec = Pool2dSpec {
            kernel: k,
            stride: s,
            padding: pad,
        };
        let (ho, wo) = (spec.out_size(h), spec.out_size(w));
        let what = format!("pool#{case} {h}x{w} k{k} s{s} p{pad}");
        let shape = [n, c, h, w];
        // Integer values: many ties, so the first-maximum rule is exercised.
        let mut x: Vec<f32> = (0..n * c * h * w)
            .map(|_| (rng.below(7) as f32) - 3.5)
            .collect();
        if case % 3 == 0 {
            let i = rng.below(x.len());
            x[i] = f32::NAN;
        }
        let tx = t(&x, &shape);
        let p = PoolParams {
            n: n as i64,
            c: c as i64,
            h: h as i64,
            w: w as i64,
            ho: ho as i64,
            wo: wo as i64,
            k: k as i32,
            stride: s as i32,
            padding: pad as i32,
            power: POOL_GRADIENT,
        };
        let l = Launch::d1(2, B);
        let (mut y, mut arg) = (vec![0.0f32; n * c * ho * wo], vec![0.0f32; n * c * ho * wo]);
        unsafe { host_maxpool_fwd(l, x.as_ptr(), y.as_mut_ptr(), arg.as_mut_ptr(), p) };
        let (wy, warg) = cpu().max_pool2d_forward(&tx, spec).unwrap();
        for (i, (a, b)) in y.iter().zip(wy.cpu()).enumerate() {
            assert!(
                a == b || (a.is_nan() && b.is_nan()),
                "{what}: max y[{i}] {a} vs {b}"
            );
        }
        assert_eq!(arg, warg.cpu(), "{what}: argmax");
        let dy = rvec(n * c * ho * wo, &mut rng);
        let tdy = t(&dy, &[n, c, ho, wo]);
        let mut dx = vec![f32::NAN; x.len()];
        unsafe { host_maxpool_bwd(l, arg.as_ptr(), dy.as_ptr(), dx.as_mut_ptr(), p) };
        let want = cpu().max_pool2d_backward(&warg, &tdy, &shape).unwrap();
        close(&format!("{what} max bwd"), &dx, want.cpu());
        let mut bad = 0i32;
        dx.fill(f32::NAN);
        unsafe {
            host_maxpool_bwd_scatter(l, arg.as_ptr(), dy.as_ptr(), dx.as_mut_ptr(), &mut bad, p)
        };
        assert_eq!(dx, want.cpu(), "{what}: max bwd scatter (bitwise)");
        assert_eq!(bad, 0, "{what}: scatter flagged a valid argmax");
        let mut broken = arg.clone();
        broken[0] = (h * w) as f32;
        unsafe {
            host_maxpool_bwd_scatter(
                l,
                broken.as_ptr(),
                dy.as_ptr(),
                dx.as_mut_ptr(),
                &mut bad,
                p,
            )
        };
        assert_eq!(bad, 1, "{what}: out-of-plane offset not flagged");

        let xr = rvec(x.len(), &mut rng);
        let txr = t(&xr, &shape);
        unsafe { host_avgpool_fwd(l, xr.as_ptr(), y.as_mut_ptr(), p) };
        close(
            &format!("{what} avg fwd"),
            &y,
            cpu().avg_pool2d_forward(&txr, spec).unwrap().cpu(),
        );
        for power in [POOL_GRADIENT, POOL_CURVATURE] {
            let pp = PoolParams { power, ..p };
            unsafe { host_avgpool_bwd(l, dy.as_ptr(), dx.as_mut_ptr(), pp) };
            let want = cpu()
                .avg_pool2d_backward(&tdy, spec, &shape, power)
                .unwrap();
            close(&format!("{what} avg bwd^{power}"), &dx, want.cpu());
        }
        let mut g = vec![0.0f32; n * c];
        unsafe { host_gap_fwd(Launch::d1(3, B), xr.as_ptr(), g.as_mut_ptr(), p) };
        close(
            &format!("{what} gap"),
            &g,
            cpu().global_avg_pool_forward(&txr).unwrap().cpu(),
        );
        let dg = rvec(n * c, &mut rng);
        for power in [POOL_GRADIENT, POOL_CURVATURE] {
            let pp = PoolParams { power, ..p };
            unsafe { host_gap_bwd(l, dg.as_ptr(), dx.as_mut_ptr(), pp) };
            let want = cpu()
                .global_avg_pool_backward(&t(&dg, &[n, c]), &shape, power)
                .unwrap();
            close(&format!("{what} gap bwd^{power}"), &dx, want.cpu());
        }
    }
}

// ---------------------------------------------------------------------------------------
// structure.cu
// ---------------------------------------------------------------------------------------

#[test]
fn concat_split_shift() {
    let mut rng = Rng::new(7);
    let (n, h, w) = (3usize, 4usize, 5usize);
    let cs = [2usize, 1, 3];
    let ctot: usize = cs.iter().sum();
    let parts: Vec<Vec<f32>> = cs.iter().map(|&c| rvec(n * c * h * w, &mut rng)).collect();
    let tparts: Vec<Tensor> = parts
        .iter()
        .zip(&cs)
        .map(|(v, &c)| t(v, &[n, c, h, w]))
        .collect();
    let refs: Vec<&Tensor> = tparts.iter().collect();
    let want = cpu().concat_channels(&refs).unwrap();
    let mut big = vec![f32::NAN; n * ctot * h * w];
    let mut off = 0;
    for (v, &c) in parts.iter().zip(&cs) {
        let p = CopyParams {
            n: n as i64,
            hw: (h * w) as i64,
            c_src: c as i64,
            c_dst: ctot as i64,
            c_off: off,
            direction: COPY_INTO_CHANNELS,
            ..Default::default()
        };
        unsafe { host_copy_channels(Launch::d1(2, B), v.as_ptr(), big.as_mut_ptr(), p) };
        off += c as i64;
    }
    close("concat", &big, want.cpu());
    let splits = cpu().split_channels(&want, &cs).unwrap();
    let mut off = 0;
    for (sp, &c) in splits.iter().zip(&cs) {
        let mut piece = vec![f32::NAN; n * c * h * w];
        let p = CopyParams {
            n: n as i64,
            hw: (h * w) as i64,
            c_src: c as i64,
            c_dst: ctot as i64,
            c_off: off,
            direction: COPY_FROM_CHANNELS,
            ..Default::default()
        };
        unsafe { host_copy_channels(Launch::d1(2, B), big.as_ptr(), piece.as_mut_ptr(), p) };
        close("split", &piece, sp.cpu());
        off += c as i64;
    }
    let c = 2;
    let x = rvec(n * c * h * w, &mut rng);
    let tx = t(&x, &[n, c, h, w]);
    let p = ShiftParams {
        n: n as i64,
        c: c as i64,
        h: h as i64,
        w: w as i64,
    };
    let mut y = vec![f32::NAN; n * c * (h - 1) * (w - 1)];
    unsafe { host_shift_crop(Launch::d1(2, B), x.as_ptr(), y.as_mut_ptr(), p) };
    close("shift_crop", &y, cpu().shift_crop(&tx).unwrap().cpu());
    let dy = rvec(y.len(), &mut rng);
    let mut dx = vec![f32::NAN; x.len()];
    unsafe { host_shift_crop_bwd(Launch::d1(2, B), dy.as_ptr(), dx.as_mut_ptr(), p) };
    let want = cpu()
        .shift_crop_backward(&t(&dy, &[n, c, h - 1, w - 1]), &[n, c, h, w])
        .unwrap();
    close("shift_crop_bwd", &dx, want.cpu());
}

#[test]
fn select_columns_forward_and_backward() {
    let mut rng = Rng::new(18);
    for (n, cols, m) in [
        (5usize, 12usize, 5usize),
        (33, 300, 120),
        (1, 1, 1),
        (4, 9, 9),
    ] {
        let what = format!("select_columns n{n} cols{cols} m{m}");
        // m distinct columns in a random order.
        let mut all: Vec<usize> = (0..cols).collect();
        rng.shuffle(&mut all);
        let idx = &all[..m];
        let p = ColumnsParams {
            n: n as i64,
            cols: cols as i64,
            m: m as i64,
        };
        let x = rvec(n * cols, &mut rng);
        let map: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
        let mut y = vec![f32::NAN; n * m];
        unsafe {
            host_select_columns(
                Launch::d1(2, B),
                x.as_ptr(),
                map.as_ptr(),
                y.as_mut_ptr(),
                p,
            )
        };
        let want = cpu().select_columns(&t(&x, &[n, cols]), idx).unwrap();
        assert_eq!(y, want.cpu(), "{what}");
        let mut dy = rvec(n * m, &mut rng);
        dy[0] = -0.0;
        let mut pos = vec![-1i64; cols];
        for (j, &i) in idx.iter().enumerate() {
            pos[i] = j as i64;
        }
        let mut dx = vec![f32::NAN; n * cols];
        unsafe {
            host_select_columns_bwd(
                Launch::d1(2, B),
                dy.as_ptr(),
                pos.as_ptr(),
                dx.as_mut_ptr(),
                p,
            )
        };
        let want = cpu()
            .select_columns_backward(&t(&dy, &[n, m]), idx, cols)
            .unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&dx), bits(want.cpu()), "{what} backward");
    }
}

// ---------------------------------------------------------------------------------------
// mixed.cu
// ---------------------------------------------------------------------------------------

#[test]
fn mixed_op_forward_backward_curvature() {
    let mut rng = Rng::new(8);
    for (n, k, inner, chunks) in [
        (3usize, 4usize, 70usize, 2i64),
        (2, 8, 1000, 3),
        (1, 1, 5, 1),
        (2, 16, 300, 2),
        (2, 17, 300, 2),
    ] {
        check_mixed(n, k, inner, chunks, &mut rng, "ascending");
    }
}

/// `mixed_switch_grads` (ONE block, any block size) against the CPU backend's
/// `mixed_switch_grads`, bit for bit: the same f64 sums in the same order (the emulation
/// compiles with -ffp-contract=off). r spans several orders of magnitude so that the order
/// of the f64 sums matters; k = 300 > 256 makes the threads loop over the columns.
#[test]
fn mixed_switch_grads_bit_for_bit() {
    let mut rng = Rng::new(12);
    for (n, k) in [(1usize, 1usize), (1, 5), (7, 1), (4, 17), (64, 8), (3, 300)] {
        let r: Vec<f32> = rvec(n * k, &mut rng)
            .iter()
            .map(|v| v * 10f32.powi(rng.below(9) as i32 - 4))
            .collect();
        let (s0, s) = (rvec(1, &mut rng), rvec(k, &mut rng));
        let (wds, wds0) = cpu()
            .mixed_switch_grads(&t(&r, &[n, k]), &t(&s0, &[1]), &t(&s, &[k]))
            .unwrap();
        let p = MixedParams {
            n: n as i64,
            inner: 0,
            chunks: 1,
            k: k as i32,
            ..Default::default()
        };
        for bx in [1u32, 32, B] {
            let what = format!("mixed_switch_grads n{n} k{k} block {bx}");
            let (mut ds, mut ds0) = (vec![f32::NAN; k], f32::NAN);
            unsafe {
                host_mixed_switch_grads(
                    Launch::d1(1, bx),
                    r.as_ptr(),
                    s0.as_ptr(),
                    s.as_ptr(),
                    ds.as_mut_ptr(),
                    &mut ds0,
                    p,
                )
            };
            assert_eq!(bits(&ds), bits(wds.cpu()), "{what}: ds");
            assert_eq!(ds0.to_bits(), wds0.cpu()[0].to_bits(), "{what}: ds0");
            // and the values are what the definition says (guards against a shared mistake)
            let tot: Vec<f64> = (0..k)
                .map(|j| (0..n).map(|i| r[i * k + j] as f64).sum())
                .collect();
            let want: Vec<f32> = tot.iter().map(|&x| (s0[0] as f64 * x) as f32).collect();
            close(&format!("{what}: ds (definition)"), &ds, &want);
            let want0: f64 = tot.iter().zip(&s).map(|(x, &sj)| x * sj as f64).sum();
            close64(
                &format!("{what}: ds0 (definition)"),
                ds0 as f64,
                want0,
                1e-6,
            );
        }
    }
    // Order-sensitive sums (random values are not: their f64 sums are exact, or differ below
    // f32 resolution): in order, 1 + 1e20 - 1e20 = 0 in f64; added in the reverse order it
    // would be 1. r = [[1], [1e20], [-1e20]] sums over n, r = [[1, 1e20, -1e20]] with s = 1
    // over k for ds0.
    let big = 1e20f32;
    for (n, k, r, s) in [
        (3usize, 1usize, vec![1.0, big, -big], vec![1.5f32]),
        (1, 3, vec![1.0, big, -big], vec![1.0; 3]),
    ] {
        let s0 = [0.75f32];
        let (wds, wds0) = cpu()
            .mixed_switch_grads(&t(&r, &[n, k]), &t(&s0, &[1]), &t(&s, &[k]))
            .unwrap();
        let p = MixedParams {
            n: n as i64,
            inner: 0,
            chunks: 1,
            k: k as i32,
            ..Default::default()
        };
        let (mut ds, mut ds0) = (vec![f32::NAN; k], f32::NAN);
        unsafe {
            host_mixed_switch_grads(
                Launch::d1(1, B),
                r.as_ptr(),
                s0.as_ptr(),
                s.as_ptr(),
                ds.as_mut_ptr(),
                &mut ds0,
                p,
            )
        };
        assert_eq!(bits(&ds), bits(wds.cpu()), "order-sensitive n{n} k{k}: ds");
        assert_eq!(
            ds0.to_bits(),
            wds0.cpu()[0].to_bits(),
            "order-sensitive: ds0"
        );
        assert_eq!(ds0, 0.0, "order-sensitive n{n} k{k}: ds0 {ds0}");
    }
    // Empty shapes: no batch (all sums 0) and no branches (ds empty, ds0 0). Equal as values;
    // the CPU's f64 `Iterator::sum` starts from -0.0 and the kernel from 0.0, so ds0 may
    // differ in the sign of its zero.
    for (n, k) in [(0usize, 3usize), (2, 0)] {
        let r = rvec(n * k, &mut rng);
        let (s0, s) = (rvec(1, &mut rng), rvec(k, &mut rng));
        let (wds, wds0) = cpu()
            .mixed_switch_grads(&t(&r, &[n, k]), &t(&s0, &[1]), &t(&s, &[k]))
            .unwrap();
        let p = MixedParams {
            n: n as i64,
            inner: 0,
            chunks: 1,
            k: k as i32,
            ..Default::default()
        };
        let (mut ds, mut ds0) = (vec![f32::NAN; k], f32::NAN);
        unsafe {
            host_mixed_switch_grads(
                Launch::d1(1, B),
                r.as_ptr(),
                s0.as_ptr(),
                s.as_ptr(),
                ds.as_mut_ptr(),
                &mut ds0,
                p,
            )
        };
        assert_eq!(ds, wds.cpu(), "n{n} k{k}: ds");
        assert!(ds.iter().all(|&v| v == 0.0), "n{n} k{k}: ds {ds:?}");
        assert_eq!(ds0, wds0.cpu()[0], "n{n} k{k}: ds0");
        assert_eq!(ds0, 0.0, "n{n} k{k}: ds0");
    }
}

// ---------------------------------------------------------------------------------------
// loss.cu and optim.cu
// ---------------------------------------------------------------------------------------

#[test]
fn softmax_cross_entropy_and_seeds() {
    let mut rng = Rng::new(9);
    for (b, k) in [(1usize, 2usize), (7, 10), (33, 100), (300, 7)] {
        let z: Vec<f32> = rvec(b * k, &mut rng).iter().map(|v| 4.0 * v).collect();
        let labels: Vec<u32> = (0..b).map(|_| rng.below(k) as u32).collect();
        let (wp, wl) = cpu()
            .softmax_cross_entropy(&t(&z, &[b, k]), &labels)
            .unwrap();
        let p = LossParams {
            b: b as i64,
            k: k as i64,
        };
        let mut probs = vec![f32::NAN; b * k];
        let mut rows = vec![f64::NAN; b];
        unsafe {
            host_softmax_ce_fwd(
                Launch::d1(2, B),
                z.as_ptr(),
                labels.as_ptr(),
                probs.as_mut_ptr(),
                rows.as_mut_ptr(),
                p,
            )
        };
        close("probs", &probs, wp.cpu());
        // softmax_ce_loss (one thread) finalizes the per-row losses on the device: the CPU's
        // sum of the rows in order, divided by b, so the same bits.
        let mut loss = f32::NAN;
        unsafe { host_softmax_ce_loss(Launch::d1(1, B), rows.as_ptr(), &mut loss, p) };
        assert_eq!(
            loss.to_bits(),
            wl.cpu()[0].to_bits(),
            "loss {b}x{k}: {loss} vs {}",
            wl.cpu()[0]
        );
        close("loss", &[loss], wl.cpu());
        let mut d = vec![f32::NAN; b * k];
        unsafe {
            host_softmax_ce_bwd(
                Launch::d1(2, B),
                probs.as_ptr(),
                labels.as_ptr(),
                d.as_mut_ptr(),
                p,
            )
        };
        let mut want: Vec<f32> = wp.cpu().to_vec();
        for (i, &l) in labels.iter().enumerate() {
            want[i * k + l as usize] -= 1.0;
        }
        want.iter_mut().for_each(|v| *v /= b as f32);
        close("dlogits", &d, &want);
        // The CPU backend's versions of the same two kernels.
        let tp = t(&probs, &[b, k]);
        close(
            "cpu dlogits",
            cpu()
                .softmax_cross_entropy_backward(&tp, &labels)
                .unwrap()
                .cpu(),
            &d,
        );
        unsafe { host_softmax_ce_curv_seed(Launch::d1(2, B), probs.as_ptr(), d.as_mut_ptr(), p) };
        let want: Vec<f32> = wp.cpu().iter().map(|&q| q * (1.0 - q) / b as f32).collect();
        close("curv seed", &d, &want);
        close(
            "cpu curv seed",
            cpu().softmax_cross_entropy_curvature(&tp).unwrap().cpu(),
            &d,
        );
    }
}

#[test]
fn sgd_momentum_matches() {
    let mut rng = Rng::new(10);
    let n = 1234;
    let (w, g, m) = (rvec(n, &mut rng), rvec(n, &mut rng), rvec(n, &mut rng));
    let (mut tw, tg, mut tm) = (t(&w, &[n]), t(&g, &[n]), t(&m, &[n]));
    let (lr, mu, wd, gs) = (0.05f32, 0.9f32, 3e-4f32, 0.5f32);
    let (mut w2, mut m2) = (w.clone(), m.clone());
    for _ in 0..3 {
        let step = SgdStep {
            lr,
            momentum: mu,
            weight_decay: wd,
            grad_scale: gs,
        };
        cpu().sgd_momentum(&mut tw, &tg, &mut tm, step).unwrap();
        let p = SgdParams {
            n: n as i64,
            lr,
            momentum: mu,
            weight_decay: wd,
            grad_scale: gs,
        };
        unsafe {
            host_sgd_momentum(
                Launch::d1(3, B),
                w2.as_mut_ptr(),
                g.as_ptr(),
                m2.as_mut_ptr(),
                p,
            )
        };
    }
    close("sgd w", &w2, tw.cpu());
    close("sgd m", &m2, tm.cpu());
}

/// `group_lasso_grad` (one block of 256 threads, a thread per group, strided) against the CPU
/// backend, bit for bit: updated gradients (from random, non-zero starting gradients) and the
/// penalty. Groups of random sizes over several tensors, an empty group and a group whose
/// members are all zero (no gradient change); with 500 groups most threads handle two.
#[test]
fn group_lasso_grad_bit_for_bit() {
    let mut rng = Rng::new(13);
    let cases: [(&[&[usize]], usize, usize, bool); 5] = [
        (&[&[7], &[3, 5], &[1], &[2, 3, 4], &[40]], 12, 5, true),
        (&[&[1000], &[17, 9]], 500, 2, true),
        (&[&[64, 3, 3], &[5]], 40, 9, true),
        (&[&[3]], 1, 2, false),
        (&[&[300]], 257, 1, false),
    ];
    for (shapes, n_groups, max_size, special) in cases {
        let what = format!("group_lasso {shapes:?} {n_groups} groups");
        let case = Lasso::random(shapes, n_groups, max_size, special, &mut rng);
        let (grads, contrib, penalty) = case.host();
        let (wgrads, wpenalty) = case.cpu();
        for (i, (g, w)) in grads.iter().zip(&wgrads).enumerate() {
            assert_eq!(bits(g), bits(w), "{what}: gradient {i}");
        }
        assert_eq!(
            penalty.to_bits(),
            wpenalty.to_bits(),
            "{what}: penalty {penalty} vs {wpenalty}"
        );
        assert!(penalty > 0.0, "{what}: penalty {penalty}");
        assert!(contrib.iter().all(|c| c.is_finite()), "{what}: contrib");
        // What changed: exactly the members of groups with a non-zero norm.
        let mut member: Vec<Vec<bool>> = case.grads0.iter().map(|g| vec![false; g.len()]).collect();
        let gs = &case.groups;
        for g in 0..gs.len() {
            for m in gs.start[g]..gs.start[g + 1] {
                let (t, e) = (gs.tensor[m], gs.elem[m]);
                member[t][e] = Some(g) != case.zero;
            }
        }
        let mut changed = 0;
        for (t, (g, g0)) in grads.iter().zip(&case.grads0).enumerate() {
            for (e, (a, b)) in g.iter().zip(g0).enumerate() {
                if member[t][e] {
                    changed += (a != b) as usize;
                } else {
                    assert_eq!(a.to_bits(), b.to_bits(), "{what}: ({t}, {e}) changed");
                }
            }
        }
        assert!(changed > 0, "{what}: no gradient changed");
        for g in [case.empty, case.zero].into_iter().flatten() {
            assert_eq!(contrib[g], 0.0, "{what}: contrib of group {g}");
        }
    }
    // No groups at all: the penalty is 0 and nothing changes.
    let case = Lasso::random(&[&[4]], 0, 1, false, &mut rng);
    let (grads, _, penalty) = case.host();
    let (wgrads, wpenalty) = case.cpu();
    assert_eq!((penalty, wpenalty), (0.0, 0.0));
    assert_eq!(grads, case.grads0);
    assert_eq!(wgrads, case.grads0);
    // The groups' contributions added in order (random positive contributions are not
    // order-sensitive at f32 resolution): one-member groups of value 1 with coefficients
    // 1, 1e20, -1e20 give 1 + 1e20 - 1e20 = 0 in f64, 1 in the reverse order.
    let mut case = Lasso::random(&[&[4]], 3, 1, false, &mut rng);
    case.vals = vec![vec![1.0; 4]];
    case.groups.coef = vec![1.0, 1e20, -1e20];
    let (grads, _, penalty) = case.host();
    let (wgrads, wpenalty) = case.cpu();
    assert_eq!(
        penalty.to_bits(),
        wpenalty.to_bits(),
        "order-sensitive penalty"
    );
    assert_eq!(penalty, 0.0, "order-sensitive penalty");
    assert_eq!(
        bits(&grads[0]),
        bits(&wgrads[0]),
        "order-sensitive gradients"
    );
}
