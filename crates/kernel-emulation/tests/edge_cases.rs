//! Host-emulated kernels against the CPU backend in the cases the parity tests never reach:
//! a batch of one (N = 1), C >= 528 channels (the one-block-per-channel batch-norm reductions
//! the CUDA backend picks when C >= TARGET_BLOCKS = 528 or N = 1, instead of the split
//! reductions), the mixed op with K > 16 branches (the loop-over-branches path of
//! kernels/mixed.cu), max-pool backward from an argmax made on the CPU (the scatter kernel the
//! backend uses for an argmax without recorded window geometry, and the gather kernel), and
//! dw_conv_fwd (not dw_conv_fwd_k3) at k = 3. Each case also runs under a shuffled barrier
//! order. Tolerance: max |got - want| <= 1e-4 * max |want|.

use bayesnas_engine::device::Unary;
use bayesnas_engine::{Conv2dSpec, Pool2dSpec, Rng};
use bayesnas_kernel_emulation::*;

mod common;
use common::*;

/// Runs `f` under ascending order and under one shuffle.
fn orders(mut f: impl FnMut(&str)) {
    for (name, order) in [
        ("ascending", Order::Ascending),
        ("shuffled", Order::Shuffled(0xed9e)),
    ] {
        with_thread_order(order, || f(name));
    }
}

/// Batch-norm statistics, backward sums and channel sums through the one-block-per-channel
/// kernels (bn_stats, bn_bwd_reduce, channel_sums, bn_bwd_apply), checked against the CPU.
fn check_bn_unsplit(n: usize, c: usize, s: usize, rng: &mut Rng, order: &str) {
    let what = format!("bn n{n} c{c} s{s} ({order})");
    let x: Vec<f32> = rvec(n * c * s, rng).iter().map(|v| 2.0 - 3.0 * v).collect();
    let dy = rvec(n * c * s, rng);
    let wt = rvec(c, rng);
    let shape = [n, c, s];
    let (tx, tdy, tw) = (t(&x, &shape), t(&dy, &shape), t(&wt, &[c]));
    let eps = 1e-5f32;
    let f = cpu()
        .batch_norm_train_forward(&tx, Some(&tw), None, eps)
        .unwrap();
    let p = BnParams {
        n: n as i64,
        c: c as i64,
        s: s as i64,
        eps,
        splits: 1,
        ..Default::default()
    };
    let l = Launch::d1(c as u32, B);
    let (m, v, is) = bn_stats(l, &x, c, p);
    close(&format!("{what} mean"), &m, f.mean.cpu());
    close(&format!("{what} var"), &v, f.var.cpu());
    close(&format!("{what} invstd"), &is, f.invstd.cpu());
    let g = cpu()
        .batch_norm_backward(&tdy, &tx, &f.mean, &f.invstd, Some(&tw))
        .unwrap();
    let (mv, iv) = (f.mean.cpu(), f.invstd.cpu());
    let (sd, sdx) = bn_bwd_reduce(l, &dy, &x, mv, iv, c, p);
    close(&format!("{what} dbias"), &sd, g.dbias.cpu());
    close(&format!("{what} dweight"), &sdx, g.dweight.cpu());
    let mut dx = vec![f32::NAN; x.len()];
    unsafe {
        host_bn_bwd_apply(
            Launch::d1(3, B),
            dy.as_ptr(),
            x.as_ptr(),
            mv.as_ptr(),
            iv.as_ptr(),
            wt.as_ptr(),
            sd.as_ptr(),
            sdx.as_ptr(),
            dx.as_mut_ptr(),
            p,
        )
    };
    close(&format!("{what} dx"), &dx, g.dx.cpu());
    for with_y in [false, true] {
        let mut out = vec![f32::NAN; c];
        let yp = if with_y {
            dy.as_ptr()
        } else {
            std::ptr::null()
        };
        unsafe { host_channel_sums(l, x.as_ptr(), yp, out.as_mut_ptr(), p) };
        let want = cpu().channel_sums(&tx, with_y.then_some(&tdy)).unwrap();
        close(&format!("{what} channel_sums y{with_y}"), &out, want.cpu());
    }
}

#[test]
fn batch_norm_unsplit_reductions_at_528_channels_and_more() {
    let mut rng = Rng::new(201);
    orders(|o| {
        for (n, c, s) in [(2usize, 528usize, 9usize), (3, 600, 4), (2, 531, 1)] {
            check_bn_unsplit(n, c, s, &mut rng, o);
        }
    });
}

#[test]
fn batch_of_one() {
    let mut rng = Rng::new(202);
    orders(|o| {
        // batch norm: N = 1 also selects the unsplit kernels
        check_bn_unsplit(1, 3, 300, &mut rng, o);
        check_bn_unsplit(1, 5, 2, &mut rng, o);
        // depthwise forward, input and weight gradients
        for (h, w, k, s, d, pad) in [
            (9usize, 11usize, 3usize, 1usize, 1usize, 1usize),
            (17, 8, 5, 2, 2, 4),
            (6, 7, 3, 1, 2, 2),
        ] {
            let c = 3;
            let spec = Conv2dSpec::new().stride(s).padding(pad).dilation(d);
            let (ho, wo) = (spec.out_size(h, k), spec.out_size(w, k));
            let what = format!("dw n1 {h}x{w} k{k} s{s} d{d} ({o})");
            let x = rvec(c * h * w, &mut rng);
            let wt = rvec(c * k * k, &mut rng);
            let dy = rvec(c * ho * wo, &mut rng);
            let (xs, ws) = ([1, c, h, w], [c, 1, k, k]);
            let (tx, tw, tdy) = (t(&x, &xs), t(&wt, &ws), t(&dy, &[1, c, ho, wo]));
            let p = DwParams {
                splits: 1,
                ..dw_params(1, c, h, w, k, spec)
            };
            let l = Launch::d3(2, c as u32, 1, B);
            let spec = spec.groups(c);
            let mut y = vec![f32::NAN; c * ho * wo];
            unsafe { host_dw_conv_fwd(l, x.as_ptr(), wt.as_ptr(), y.as_mut_ptr(), p) };
            close(
                &format!("{what} fwd"),
                &y,
                cpu().conv2d_forward(&tx, &tw, spec).unwrap().cpu(),
            );
            let mut dx = vec![f32::NAN; x.len()];
            unsafe { host_dw_conv_bwd_input(l, dy.as_ptr(), wt.as_ptr(), dx.as_mut_ptr(), p) };
            let want = cpu().conv2d_backward_input(&tdy, &tw, spec, &xs).unwrap();
            close(&format!("{what} bwd_input"), &dx, want.cpu());
            let want = cpu().conv2d_backward_weight(&tx, &tdy, spec, &ws).unwrap();
            let mut dw = vec![f32::NAN; c * k * k];
            unsafe {
                host_dw_conv_bwd_weight(
                    Launch::d1(c as u32, B),
                    x.as_ptr(),
                    dy.as_ptr(),
                    dw.as_mut_ptr(),
                    p,
                )
            };
            close(&format!("{what} bwd_weight"), &dw, want.cpu());
            let mut part = vec![f32::NAN; c * k * k];
            let mut dw2 = vec![f32::NAN; c * k * k];
            unsafe {
                host_dw_conv_bwd_weight_partial(
                    Launch::d3(c as u32, 1, 1, B),
                    x.as_ptr(),
                    dy.as_ptr(),
                    part.as_mut_ptr(),
                    p,
                );
                host_dw_conv_bwd_weight_finalize(
                    Launch::d1(1, B),
                    part.as_ptr(),
                    dw2.as_mut_ptr(),
                    p,
                );
            }
            close(&format!("{what} bwd_weight split1"), &dw2, want.cpu());
        }
        // mixed op, global average pool, loss
        check_mixed(1, 5, 333, 1, &mut rng, o);
        check_mixed(1, 18, 70, 2, &mut rng, o);
        let (c, h, w) = (4usize, 5usize, 6usize);
        let x = rvec(c * h * w, &mut rng);
        let p = PoolParams {
            n: 1,
            c: c as i64,
            h: h as i64,
            w: w as i64,
            ..Default::default()
        };
        let mut g = vec![f32::NAN; c];
        unsafe { host_gap_fwd(Launch::d1(2, B), x.as_ptr(), g.as_mut_ptr(), p) };
        let want = cpu()
            .global_avg_pool_forward(&t(&x, &[1, c, h, w]))
            .unwrap();
        close(&format!("gap n1 ({o})"), &g, want.cpu());
        check_maxpool(1, 2, 7, 5, 3, 2, 1, &mut rng, o);
    });
}

#[test]
fn mixed_op_more_than_16_branches() {
    let mut rng = Rng::new(203);
    orders(|o| {
        for (n, k, inner, chunks) in [
            (2usize, 17usize, 300usize, 2i64),
            (3, 24, 129, 1),
            (2, 33, 513, 3),
        ] {
            check_mixed(n, k, inner, chunks, &mut rng, o);
        }
    });
}

/// Max-pool backward from the CPU backend's argmax: the gather kernel (maxpool_bwd) and the
/// scatter kernel (maxpool_bwd_scatter, what the CUDA backend runs for an argmax it did not
/// make) against the CPU backward, bit for bit. Inputs are rounded to halves so windows have
/// ties (the argmax must pick the first maximum).
#[allow(clippy::too_many_arguments)]
fn check_maxpool(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    pad: usize,
    rng: &mut Rng,
    order: &str,
) {
    let spec = Pool2dSpec {
        kernel: k,
        stride: s,
        padding: pad,
    };
    let (ho, wo) = (spec.out_size(h), spec.out_size(w));
    let what = format!("maxpool n{n} c{c} {h}x{w} k{k} s{s} p{pad} ({order})");
    let shape = [n, c, h, w];
    let x: Vec<f32> = rvec(n * c * h * w, rng)
        .iter()
        .map(|v| (v * 2.0).round() / 2.0)
        .collect();
    let (_, arg) = cpu().max_pool2d_forward(&t(&x, &shape), spec).unwrap();
    let dy = rvec(n * c * ho * wo, rng);
    let want = cpu()
        .max_pool2d_backward(&arg, &t(&dy, &[n, c, ho, wo]), &shape)
        .unwrap();
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
    let a = arg.cpu();
    let mut dx = vec![f32::NAN; x.len()];
    unsafe {
        host_maxpool_bwd(
            Launch::d1(2, B),
            a.as_ptr(),
            dy.as_ptr(),
            dx.as_mut_ptr(),
            p,
        )
    };
    assert_eq!(dx, want.cpu(), "{what}: gather");
    let mut bad = 0i32;
    dx.fill(f32::NAN);
    unsafe {
        host_maxpool_bwd_scatter(
            Launch::d1(2, B),
            a.as_ptr(),
            dy.as_ptr(),
            dx.as_mut_ptr(),
            &mut bad,
            p,
        )
    };
    assert_eq!(dx, want.cpu(), "{what}: scatter");
    assert_eq!(bad, 0, "{what}: scatter flagged a valid argmax");
}

#[test]
fn max_pool_backward_from_a_cpu_argmax() {
    let mut rng = Rng::new(204);
    orders(|o| {
        for (n, c, h, w, k, s, pad) in [
            (2usize, 3usize, 8usize, 8usize, 3usize, 1usize, 1usize),
            (2, 2, 9, 7, 3, 2, 1),
            (1, 4, 6, 6, 2, 2, 0),
            (3, 1, 11, 5, 5, 3, 2),
        ] {
            check_maxpool(n, c, h, w, k, s, pad, &mut rng, o);
        }
    });
}

/// dw_conv_fwd at k = 3 (the CUDA backend launches dw_conv_fwd_k3 there, so the parity tests
/// never run this entry at k = 3) against the CPU, and bit-identical to dw_conv_fwd_k3.
#[test]
fn dw_conv_fwd_generic_entry_at_k3() {
    let mut rng = Rng::new(205);
    orders(|o| {
        for (n, c, h, w, s, d, pad) in [
            (2usize, 3usize, 10usize, 12usize, 1usize, 1usize, 1usize),
            (1, 2, 40, 37, 1, 1, 1),
            (2, 2, 17, 19, 2, 1, 1),
            (1, 3, 12, 9, 1, 2, 2),
            (2, 1, 13, 20, 2, 2, 2),
            (1, 2, 9, 8, 3, 1, 1),
        ] {
            let k = 3;
            let spec = Conv2dSpec::new().stride(s).padding(pad).dilation(d);
            let (ho, wo) = (spec.out_size(h, k), spec.out_size(w, k));
            let what = format!("dw_conv_fwd k3 n{n} c{c} {h}x{w} s{s} d{d} p{pad} ({o})");
            let x = rvec(n * c * h * w, &mut rng);
            let wt = rvec(c * k * k, &mut rng);
            let p = dw_params(n, c, h, w, k, spec);
            let l = Launch::d3(2, c as u32, n as u32, B);
            let mut y = vec![f32::NAN; n * c * ho * wo];
            unsafe { host_dw_conv_fwd(l, x.as_ptr(), wt.as_ptr(), y.as_mut_ptr(), p) };
            let want = cpu()
                .conv2d_forward(
                    &t(&x, &[n, c, h, w]),
                    &t(&wt, &[c, 1, k, k]),
                    spec.groups(c),
                )
                .unwrap();
            close(&what, &y, want.cpu());
            let mut y3 = vec![f32::NAN; y.len()];
            unsafe { host_dw_conv_fwd_k3(l, x.as_ptr(), wt.as_ptr(), y3.as_mut_ptr(), p) };
            assert_eq!(y3, y, "{what}: dw_conv_fwd_k3 differs");
            // and the squared-weight input gradient at k = 3 (the curvature step)
            let dy = rvec(n * c * ho * wo, &mut rng);
            let pw = DwParams { square_w: 1, ..p };
            let mut dx = vec![f32::NAN; x.len()];
            unsafe { host_dw_conv_bwd_input(l, dy.as_ptr(), wt.as_ptr(), dx.as_mut_ptr(), pw) };
            let w2 = cpu().unary(&t(&wt, &[c, 1, k, k]), Unary::Square).unwrap();
            let want = cpu()
                .conv2d_backward_input(&t(&dy, &[n, c, ho, wo]), &w2, spec.groups(c), &[n, c, h, w])
                .unwrap();
            close(&format!("{what} bwd_input w^2"), &dx, want.cpu());
        }
    });
}

// The test-only planted kernel of csrc/planted.cpp: writes one element past the end of `y`.
extern "C" {
    fn host_planted_oob_write(l: Launch, y: *mut f32, p: EwParams);
}

/// The AddressSanitizer self-test (`tools/emulation-asan.sh --self-test` runs it and expects
/// ASan to report a heap-buffer-overflow). Ignored by default: without ASan the planted write
/// would silently corrupt the heap.
#[test]
#[ignore = "planted out-of-bounds write: only for tools/emulation-asan.sh --self-test"]
fn planted_out_of_bounds_write() {
    let n = 37usize;
    let mut y = vec![0.0f32; n];
    let p = EwParams {
        n: n as i64,
        alpha: 1.0,
        ..Default::default()
    };
    unsafe { host_planted_oob_write(Launch::d1(1, B), y.as_mut_ptr(), p) };
    assert_eq!(y[1], 1.0);
}
