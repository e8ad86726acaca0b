//! `sep_conv_fwd` (a depthwise convolution then a pointwise one in one launch, with the
//! depthwise tile in shared memory) on the host against the CPU backend's two convolutions
//! (`conv2d_forward` twice), on random never-zero data over the separable and dilated
//! geometries of the search space and odd ones (k = 1, asymmetric planes, more channels than
//! one tile row holds, a last tile only partly inside the plane), for several tile sizes.
//! Every case runs under all barrier orders (`TEST_ORDERS`) and must give the same bits: the
//! pointwise phase reads the shared tile that other threads wrote before the barrier.

mod common;

use bayesnas_engine::Conv2dSpec;
use bayesnas_engine::Rng;
use bayesnas_kernel_emulation::*;
use common::*;

#[allow(clippy::too_many_arguments)]
fn run(
    x: &[f32],
    wdw: &[f32],
    wpw: &[f32],
    (n, c, co, h, w): (usize, usize, usize, usize, usize),
    (k, stride, pad, dil): (usize, usize, usize, usize),
    (ho, wo): (usize, usize),
    tile: usize,
) -> (Vec<f32>, Vec<f32>) {
    let p = SepParams {
        n: n as i64,
        c: c as i64,
        co: co as i64,
        h: h as i64,
        w: w as i64,
        ho: ho as i64,
        wo: wo as i64,
        k: k as i32,
        stride: stride as i32,
        padding: pad as i32,
        dilation: dil as i32,
        tile: tile as i32,
        _pad: 0,
    };
    let (mut mid, mut y) = (
        vec![f32::NAN; n * c * ho * wo],
        vec![f32::NAN; n * co * ho * wo],
    );
    let tiles = (ho * wo).div_ceil(tile);
    unsafe {
        host_sep_conv_fwd(
            Launch::d3(tiles as u32, n as u32, 1, B),
            x.as_ptr(),
            wdw.as_ptr(),
            wpw.as_ptr(),
            mid.as_mut_ptr(),
            y.as_mut_ptr(),
            p,
        )
    };
    (mid, y)
}

#[test]
fn sep_conv_fwd_matches_two_cpu_convolutions_under_every_barrier_order() {
    let mut rng = Rng::new(515);
    // (n, c, co, h, w), (k, stride, dilation)
    let cases = [
        (
            (2usize, 4usize, 4usize, 8usize, 8usize),
            (3usize, 1usize, 1usize),
        ),
        ((2, 4, 4, 8, 8), (5, 1, 1)),
        ((2, 4, 4, 8, 8), (3, 2, 1)),
        ((2, 4, 4, 9, 7), (3, 1, 2)),
        ((1, 6, 6, 9, 9), (5, 2, 2)),
        ((3, 5, 7, 6, 11), (1, 1, 1)),
        ((1, 33, 16, 5, 5), (3, 1, 1)),
    ];
    for ((n, c, co, h, w), (k, stride, dil)) in cases {
        let pad = dil * (k - 1) / 2;
        let spec = Conv2dSpec::new()
            .stride(stride)
            .padding(pad)
            .dilation(dil)
            .groups(c);
        let x = rvec(n * c * h * w, &mut rng);
        let wdw = rvec(c * k * k, &mut rng);
        let wpw = rvec(co * c, &mut rng);
        let (tx, tdw, tpw) = (
            t(&x, &[n, c, h, w]),
            t(&wdw, &[c, 1, k, k]),
            t(&wpw, &[co, c, 1, 1]),
        );
        let want_mid = cpu().conv2d_forward(&tx, &tdw, spec).unwrap();
        let want_y = cpu()
            .conv2d_forward(&want_mid, &tpw, Conv2dSpec::new())
            .unwrap();
        let (ho, wo) = (want_mid.shape()[2], want_mid.shape()[3]);
        let plane = ho * wo;
        for tile in [1usize, 7, 64.min(plane), plane] {
            let what = format!("n{n} c{c} co{co} {h}x{w} k{k} s{stride} d{dil} tile {tile}");
            let mut outs = Vec::new();
            for order in TEST_ORDERS {
                let (mid, y) = with_thread_order(order, || {
                    run(
                        &x,
                        &wdw,
                        &wpw,
                        (n, c, co, h, w),
                        (k, stride, pad, dil),
                        (ho, wo),
                        tile,
                    )
                });
                outs.push((order, bits(&mid), bits(&y)));
                if order == TEST_ORDERS[0] {
                    close(&format!("{what} mid"), &mid, want_mid.cpu());
                    close(&format!("{what} y"), &y, want_y.cpu());
                }
            }
            for (order, m, y) in &outs[1..] {
                assert_eq!(m, &outs[0].1, "{what}: mid differs under {order:?}");
                assert_eq!(y, &outs[0].2, "{what}: y differs under {order:?}");
            }
        }
    }
}
