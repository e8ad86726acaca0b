//! The kernels of batch norm fused with ReLU (`bn_relu_fwd_apply`, `bn_relu_bwd_reduce`,
//! `bn_relu_bwd_partial` + `bn_bwd_finalize`, `bn_relu_bwd_apply`,
//! `bn_relu_curvature_input`) on the host, checked two ways on random never-zero data in
//! which about half the batch-norm outputs are negative:
//! * against the CPU backend's fused methods (`batch_norm_relu_*`, the composition of batch
//!   norm and ReLU), to the emulation tests' tolerance;
//! * bit for bit against the plain kernels run on a `dy` (`hy`) masked on the host by
//!   `y > 0`, so the mask is the only difference the fused kernels make.

mod common;

use bayesnas_engine::device::Binary;
use bayesnas_engine::Rng;
use bayesnas_kernel_emulation::*;
use common::*;

#[test]
fn bn_relu_kernels_match_cpu_and_the_plain_kernels_on_masked_input() {
    let mut rng = Rng::new(4242);
    for &(n, c, s) in &[
        (2usize, 3usize, 25usize),
        (4, 5, 49),
        (1, 2, 300),
        (3, 7, 1),
    ] {
        let len = n * c * s;
        let x = rvec(len, &mut rng);
        let dy = rvec(len, &mut rng);
        let wt = rvec(c, &mut rng);
        let bias = rvec(c, &mut rng);
        let (tx, tdy, tw, tb) = (
            t(&x, &[n, c, s]),
            t(&dy, &[n, c, s]),
            t(&wt, &[c]),
            t(&bias, &[c]),
        );
        for affine in [false, true] {
            let what = format!("n{n} c{c} s{s} affine {affine}");
            let (w_opt, b_opt) = (affine.then_some(&tw), affine.then_some(&tb));
            let f = cpu()
                .batch_norm_relu_train_forward(&tx, w_opt, b_opt, 1e-5, None)
                .unwrap();
            let p = BnParams {
                n: n as i64,
                c: c as i64,
                s: s as i64,
                eps: 1e-5,
                ..Default::default()
            };
            let (mv, iv) = (f.mean.cpu(), f.invstd.cpu());
            let (wp, bp) = if affine {
                (wt.as_ptr(), bias.as_ptr())
            } else {
                (std::ptr::null(), std::ptr::null())
            };
            let l = Launch::d1(3, B);
            // Forward: rectified output, and the unrectified one of the plain kernel.
            let (mut y, mut pre) = (vec![f32::NAN; len], vec![f32::NAN; len]);
            unsafe {
                host_bn_relu_fwd_apply(
                    l,
                    x.as_ptr(),
                    mv.as_ptr(),
                    iv.as_ptr(),
                    wp,
                    bp,
                    y.as_mut_ptr(),
                    p,
                );
                host_bn_fwd_apply(
                    l,
                    x.as_ptr(),
                    mv.as_ptr(),
                    iv.as_ptr(),
                    wp,
                    bp,
                    pre.as_mut_ptr(),
                    p,
                );
            }
            close(&format!("{what} y"), &y, f.y.cpu());
            let relu: Vec<f32> = pre.iter().map(|v| v.max(0.0)).collect();
            assert_eq!(bits(&y), bits(&relu), "{what}: y is not max(bn(x), 0)");
            let zeros = y.iter().filter(|&&v| v == 0.0).count();
            if len >= 20 {
                assert!(
                    zeros > len / 5 && zeros < len * 4 / 5,
                    "{what}: {zeros} of {len} rectified"
                );
            }
            // The masked dy the plain kernels get.
            let masked: Vec<f32> = y
                .iter()
                .zip(&dy)
                .map(|(&a, &d)| if a > 0.0 { d } else { 0.0 })
                .collect();
            let ty = t(&y, &[n, c, s]);
            let g = cpu()
                .batch_norm_relu_backward(&tdy, &ty, &tx, &f.mean, &f.invstd, w_opt)
                .unwrap();
            // Reductions, whole-channel form.
            let (mut sd, mut sdx) = (vec![f32::NAN; c], vec![f32::NAN; c]);
            unsafe {
                host_bn_relu_bwd_reduce(
                    Launch::d1(c as u32, B),
                    dy.as_ptr(),
                    y.as_ptr(),
                    x.as_ptr(),
                    mv.as_ptr(),
                    iv.as_ptr(),
                    sd.as_mut_ptr(),
                    sdx.as_mut_ptr(),
                    p,
                )
            };
            let (psd, psdx) = bn_bwd_reduce(Launch::d1(c as u32, B), &masked, &x, mv, iv, c, p);
            assert_eq!(bits(&sd), bits(&psd), "{what}: bn_relu_bwd_reduce sum dy");
            assert_eq!(
                bits(&sdx),
                bits(&psdx),
                "{what}: bn_relu_bwd_reduce sum dy xhat"
            );
            close(&format!("{what} dbias"), &sd, g.dbias.cpu());
            close(&format!("{what} dweight"), &sdx, g.dweight.cpu());
            // Reductions, split form.
            for splits in [1usize, n] {
                let sp = BnParams {
                    splits: splits as i32,
                    ..p
                };
                let (mut part, mut ppart) = (
                    vec![f64::NAN; 2 * c * splits],
                    vec![f64::NAN; 2 * c * splits],
                );
                let grid = Launch::d3(c as u32, splits as u32, 1, B);
                unsafe {
                    host_bn_relu_bwd_partial(
                        grid,
                        dy.as_ptr(),
                        y.as_ptr(),
                        x.as_ptr(),
                        mv.as_ptr(),
                        part.as_mut_ptr(),
                        sp,
                    );
                    host_bn_bwd_partial(
                        grid,
                        masked.as_ptr(),
                        x.as_ptr(),
                        mv.as_ptr(),
                        ppart.as_mut_ptr(),
                        sp,
                    );
                }
                let b64 = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    b64(&part),
                    b64(&ppart),
                    "{what}: bn_relu_bwd_partial split {splits}"
                );
                let (mut sd2, mut sdx2) = (vec![f32::NAN; c], vec![f32::NAN; c]);
                unsafe {
                    host_bn_bwd_finalize(
                        Launch::d1(1, B),
                        part.as_ptr(),
                        iv.as_ptr(),
                        sd2.as_mut_ptr(),
                        sdx2.as_mut_ptr(),
                        sp,
                    )
                };
                close(&format!("{what} dbias split {splits}"), &sd2, g.dbias.cpu());
                close(
                    &format!("{what} dweight split {splits}"),
                    &sdx2,
                    g.dweight.cpu(),
                );
            }
            // Input gradient.
            let (mut dx, mut pdx) = (vec![f32::NAN; len], vec![f32::NAN; len]);
            unsafe {
                host_bn_relu_bwd_apply(
                    l,
                    dy.as_ptr(),
                    y.as_ptr(),
                    x.as_ptr(),
                    mv.as_ptr(),
                    iv.as_ptr(),
                    wp,
                    sd.as_ptr(),
                    sdx.as_ptr(),
                    dx.as_mut_ptr(),
                    p,
                );
                host_bn_bwd_apply(
                    l,
                    masked.as_ptr(),
                    x.as_ptr(),
                    mv.as_ptr(),
                    iv.as_ptr(),
                    wp,
                    psd.as_ptr(),
                    psdx.as_ptr(),
                    pdx.as_mut_ptr(),
                    p,
                );
            }
            assert_eq!(bits(&dx), bits(&pdx), "{what}: bn_relu_bwd_apply");
            close(&format!("{what} dx"), &dx, g.dx.cpu());
            // Curvature.
            let hy: Vec<f32> = rvec(len, &mut rng).iter().map(|v| v.abs()).collect();
            let th = t(&hy, &[n, c, s]);
            let want = cpu()
                .batch_norm_relu_curvature(&th, &ty, &f.invstd, w_opt)
                .unwrap();
            let hmasked = cpu().binary(&ty, &th, Binary::ReluMask).unwrap();
            let (mut hx, mut phx) = (vec![f32::NAN; len], vec![f32::NAN; len]);
            unsafe {
                host_bn_relu_curvature_input(
                    l,
                    hy.as_ptr(),
                    y.as_ptr(),
                    iv.as_ptr(),
                    wp,
                    hx.as_mut_ptr(),
                    p,
                );
                host_bn_curvature_input(
                    l,
                    hmasked.cpu().as_ptr(),
                    iv.as_ptr(),
                    wp,
                    phx.as_mut_ptr(),
                    p,
                );
            }
            assert_eq!(bits(&hx), bits(&phx), "{what}: bn_relu_curvature_input");
            // The curvature kernel is bit-exact against the CPU (products only).
            assert_eq!(bits(&hx), bits(want.cpu()), "{what}: hx against the CPU");
        }
    }
}
