//! CUDA vs CPU parity in the cases tests/device_parity.rs never reaches: a batch of one
//! (N = 1), C >= 528 channels (batch norm then takes the one-block-per-channel reductions
//! instead of the split ones: the backend splits only while C < TARGET_BLOCKS = 528 and
//! N > 1), the mixed op with K > 16 branches (the loop-over-branches path of
//! kernels/mixed.cu), max-pool backward from an argmax made on the CPU (uploaded, so the
//! backend has no window geometry and runs maxpool_bwd_scatter), and depthwise convolution at
//! k = 3 (through the backend, which runs dw_conv_fwd_k3, and the generic dw_conv_fwd entry
//! launched directly from the PTX). The same cases run in the host emulation,
//! crates/kernel-emulation/tests/edge_cases.rs.
//!
//! Criterion: `||cuda - cpu||_2 / ||cpu||_2 <= 1e-4` (max-pool backward bit for bit). Without
//! a usable GPU every test prints `skipped: <test>: <reason>` and passes, unless
//! `BAYESNAS_REQUIRE_GPU=1`, when it fails; `BAYESNAS_PARITY_SELFTEST=1` lets the CPU stand in
//! for the GPU (to check the tests themselves); the skip rule is tests/common's `cuda_or_skip`.

use bayesnas_engine::prelude::*;
use bayesnas_engine::Backend;

#[macro_use]
mod common;
use common::{assert_rel, cpu, up};

const TOL: f64 = 1e-4;

/// A random CPU tensor, normal(0, 1) with no exact zeros.
fn rnd(shape: &[usize], rng: &mut Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let v = rng.normal() as f32;
            if v.abs() < 1e-3 {
                0.5
            } else {
                v
            }
        })
        .collect();
    Tensor::from_vec(v, shape).unwrap()
}

#[track_caller]
fn same(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert_rel(what, &got.to_vec(), &want.to_vec(), TOL);
}

fn check_batch_norm(g: &dyn Backend, shape: &[usize], rng: &mut Rng) {
    let c = shape[1];
    let what = format!("batch_norm {shape:?}");
    let x = rnd(shape, rng);
    let dy = rnd(shape, rng);
    let (w, b) = (rnd(&[c], rng), rnd(&[c], rng));
    let want = cpu()
        .batch_norm_train_forward(&x, Some(&w), Some(&b), 1e-5)
        .unwrap();
    let (gx, gdy, gw, gb) = (up(g, &x), up(g, &dy), up(g, &w), up(g, &b));
    let got = g
        .batch_norm_train_forward(&gx, Some(&gw), Some(&gb), 1e-5)
        .unwrap();
    same(&format!("{what} y"), &got.y, &want.y);
    same(&format!("{what} mean"), &got.mean, &want.mean);
    same(&format!("{what} var"), &got.var, &want.var);
    same(&format!("{what} invstd"), &got.invstd, &want.invstd);
    let wb = cpu()
        .batch_norm_backward(&dy, &x, &want.mean, &want.invstd, Some(&w))
        .unwrap();
    let gbk = g
        .batch_norm_backward(&gdy, &gx, &got.mean, &got.invstd, Some(&gw))
        .unwrap();
    same(&format!("{what} dx"), &gbk.dx, &wb.dx);
    same(&format!("{what} dweight"), &gbk.dweight, &wb.dweight);
    same(&format!("{what} dbias"), &gbk.dbias, &wb.dbias);
    for y in [None, Some(&dy)] {
        let want = cpu().channel_sums(&x, y).unwrap();
        let gy = y.map(|t| up(g, t));
        let got = g.channel_sums(&gx, gy.as_ref()).unwrap();
        same(
            &format!("{what} channel_sums y{}", y.is_some()),
            &got,
            &want,
        );
    }
}

#[test]
fn batch_norm_unsplit_at_528_channels_and_more() {
    let g = gpu!("batch_norm_unsplit_at_528_channels_and_more");
    let mut rng = Rng::new(301);
    for shape in [[2usize, 528, 3, 3], [3, 600, 2, 2], [2, 531, 1, 1]] {
        check_batch_norm(g, &shape, &mut rng);
    }
}

fn check_mixed(g: &dyn Backend, n: usize, k: usize, inner: &[usize], rng: &mut Rng) {
    let mut shape = vec![n];
    shape.extend_from_slice(inner);
    let what = format!("mixed k{k} {shape:?}");
    let xs: Vec<Tensor> = (0..k).map(|_| rnd(&shape, rng)).collect();
    let (s0, s, dy) = (rnd(&[1], rng), rnd(&[k], rng), rnd(&shape, rng));
    let refs: Vec<&Tensor> = xs.iter().collect();
    let gxs: Vec<Tensor> = xs.iter().map(|t| up(g, t)).collect();
    let grefs: Vec<&Tensor> = gxs.iter().collect();
    let (gs0, gs, gdy) = (up(g, &s0), up(g, &s), up(g, &dy));
    same(
        &format!("{what} fwd"),
        &g.mixed_forward(&grefs, &gs0, &gs).unwrap(),
        &cpu().mixed_forward(&refs, &s0, &s).unwrap(),
    );
    let (wdx, wr) = cpu().mixed_backward(&refs, &dy, &s0, &s).unwrap();
    let (gdx, gr) = g.mixed_backward(&grefs, &gdy, &gs0, &gs).unwrap();
    for (j, (a, b)) in gdx.iter().zip(&wdx).enumerate() {
        same(&format!("{what} dx{j}"), a, b);
    }
    same(&format!("{what} r"), &gr, &wr);
    let (whx, whs, whs0) = cpu().mixed_curvature(&refs, &dy, &s0, &s).unwrap();
    let (ghx, ghs, ghs0) = g.mixed_curvature(&grefs, &gdy, &gs0, &gs).unwrap();
    for (j, (a, b)) in ghx.iter().zip(&whx).enumerate() {
        same(&format!("{what} hx{j}"), a, b);
    }
    same(&format!("{what} h_s"), &ghs, &whs);
    same(&format!("{what} h_s0"), &ghs0, &whs0);
}

#[test]
fn mixed_op_more_than_16_branches() {
    let g = gpu!("mixed_op_more_than_16_branches");
    let mut rng = Rng::new(302);
    for (n, k, inner) in [(2usize, 17usize, vec![3usize, 10, 10]), (3, 24, vec![129])] {
        check_mixed(g, n, k, &inner, &mut rng);
    }
    check_mixed(g, 2, 33, &[4, 8, 8], &mut rng);
}

fn check_maxpool(g: &dyn Backend, shape: [usize; 4], k: usize, s: usize, p: usize, rng: &mut Rng) {
    let spec = Pool2dSpec {
        kernel: k,
        stride: s,
        padding: p,
    };
    let what = format!("max_pool {shape:?} k{k} s{s} p{p}");
    // halves, so that windows hold ties (the argmax takes the first maximum)
    let x = rnd(&shape, rng);
    let x = Tensor::from_vec(
        x.to_vec().iter().map(|v| (v * 2.0).round() / 2.0).collect(),
        &shape,
    )
    .unwrap();
    let (y, arg) = cpu().max_pool2d_forward(&x, spec).unwrap();
    let dy = rnd(y.shape(), rng);
    let want = cpu().max_pool2d_backward(&arg, &dy, &shape).unwrap();
    // the CPU's argmax, uploaded: the device has no recorded window geometry for it
    let got = g
        .max_pool2d_backward(&up(g, &arg), &up(g, &dy), &shape)
        .unwrap();
    assert_eq!(got.to_vec(), want.to_vec(), "{what}: backward (bitwise)");
}

#[test]
fn max_pool_backward_from_a_cpu_argmax() {
    let g = gpu!("max_pool_backward_from_a_cpu_argmax");
    let mut rng = Rng::new(303);
    check_maxpool(g, [2, 3, 8, 8], 3, 1, 1, &mut rng);
    check_maxpool(g, [2, 2, 9, 7], 3, 2, 1, &mut rng);
    check_maxpool(g, [1, 4, 6, 6], 2, 2, 0, &mut rng);
    check_maxpool(g, [3, 1, 11, 5], 5, 3, 2, &mut rng);
}

fn check_depthwise(g: &dyn Backend, shape: [usize; 4], k: usize, spec: Conv2dSpec, rng: &mut Rng) {
    let c = shape[1];
    let spec = spec.groups(c);
    let what = format!("depthwise {shape:?} k{k} {spec:?}");
    let x = rnd(&shape, rng);
    let w = rnd(&[c, 1, k, k], rng);
    let want = cpu().conv2d_forward(&x, &w, spec).unwrap();
    let (gx, gw) = (up(g, &x), up(g, &w));
    same(
        &format!("{what} fwd"),
        &g.conv2d_forward(&gx, &gw, spec).unwrap(),
        &want,
    );
    let dy = rnd(want.shape(), rng);
    let gdy = up(g, &dy);
    same(
        &format!("{what} bwd_input"),
        &g.conv2d_backward_input(&gdy, &gw, spec, &shape).unwrap(),
        &cpu().conv2d_backward_input(&dy, &w, spec, &shape).unwrap(),
    );
    let ws = [c, 1, k, k];
    same(
        &format!("{what} bwd_weight"),
        &g.conv2d_backward_weight(&gx, &gdy, spec, &ws).unwrap(),
        &cpu().conv2d_backward_weight(&x, &dy, spec, &ws).unwrap(),
    );
}

/// The k = 3 depthwise geometries: input shape, stride, dilation, padding (the templated
/// stride/dilation pairs and the generic path).
const K3_CASES: [([usize; 4], usize, usize, usize); 6] = [
    ([2, 3, 10, 12], 1, 1, 1),
    ([1, 2, 40, 37], 1, 1, 1),
    ([2, 2, 17, 19], 2, 1, 1),
    ([1, 3, 12, 9], 1, 2, 2),
    ([2, 1, 13, 20], 2, 2, 2),
    ([1, 2, 9, 8], 3, 1, 1),
];

#[test]
fn depthwise_at_k3() {
    let g = gpu!("depthwise_at_k3");
    let mut rng = Rng::new(304);
    for (shape, s, d, p) in K3_CASES {
        let spec = Conv2dSpec::new().stride(s).padding(p).dilation(d);
        check_depthwise(g, shape, 3, spec, &mut rng);
    }
}

#[test]
fn batch_of_one() {
    let g = gpu!("batch_of_one");
    let mut rng = Rng::new(305);
    check_batch_norm(g, &[1, 3, 17, 19], &mut rng);
    check_batch_norm(g, &[1, 5, 2, 1], &mut rng);
    check_mixed(g, 1, 5, &[3, 11, 11], &mut rng);
    check_mixed(g, 1, 18, &[70], &mut rng);
    check_maxpool(g, [1, 2, 7, 5], 3, 2, 1, &mut rng);
    let spec = Conv2dSpec::new().stride(2).padding(4).dilation(2);
    check_depthwise(g, [1, 3, 17, 8], 5, spec, &mut rng);
    check_depthwise(g, [1, 3, 9, 11], 3, Conv2dSpec::new().padding(1), &mut rng);
    let x = rnd(&[1, 4, 5, 6], &mut rng);
    same(
        "gap n1",
        &g.global_avg_pool_forward(&up(g, &x)).unwrap(),
        &cpu().global_avg_pool_forward(&x).unwrap(),
    );
    let z = rnd(&[1, 10], &mut rng);
    let (wp, wl) = cpu().softmax_cross_entropy(&z, &[3]).unwrap();
    let (gp, gl) = g.softmax_cross_entropy(&up(g, &z), &[3]).unwrap();
    let (wl, gl) = (wl.item().unwrap(), gl.item().unwrap());
    same("softmax_ce n1 probs", &gp, &wp);
    assert!(
        ((gl - wl) / wl).abs() <= TOL as f32,
        "softmax_ce n1 loss {gl} vs {wl}"
    );
}

/// The generic `dw_conv_fwd` entry at k = 3, launched directly (the backend always takes
/// `dw_conv_fwd_k3` at k = 3, so no `Backend` call reaches it): against the CPU, and bit for
/// bit against `dw_conv_fwd_k3` launched the same way. The grid is the backend's (tiles, c, n).
#[test]
fn dw_conv_fwd_generic_entry_at_k3() {
    use bayesnas_engine::device::cuda::{self, params::DwParams};
    use cudarc::driver::{LaunchConfig, PushKernelArg};
    let name = "dw_conv_fwd_generic_entry_at_k3";
    if common::parity_selftest() {
        eprintln!("skipped: {name}: launches PTX directly, no CPU stand-in");
        return;
    }
    let _ = gpu!(name);
    let be = cuda::backend(0).unwrap();
    let module = cuda::kernel_entries()
        .iter()
        .find(|(_, e)| *e == "dw_conv_fwd")
        .map(|(m, _)| *m)
        .expect("dw_conv_fwd in the PTX");
    let ptx = cuda::ptx_modules()
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, p)| *p)
        .unwrap();
    let m = be
        .context()
        .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
        .unwrap();
    let stream = be.stream();
    let mut rng = Rng::new(306);
    for ([n, c, h, w], s, d, pad) in K3_CASES {
        let k = 3;
        let spec = Conv2dSpec::new().stride(s).padding(pad).dilation(d);
        let (ho, wo) = (spec.out_size(h, k), spec.out_size(w, k));
        let what = format!("dw_conv_fwd k3 [{n}, {c}, {h}, {w}] s{s} d{d} p{pad}");
        let x = rnd(&[n, c, h, w], &mut rng);
        let wt = rnd(&[c, 1, k, k], &mut rng);
        let want = cpu().conv2d_forward(&x, &wt, spec.groups(c)).unwrap();
        let p = DwParams {
            n: n as i64,
            c: c as i64,
            h: h as i64,
            w: w as i64,
            ho: ho as i64,
            wo: wo as i64,
            k: k as i32,
            stride: s as i32,
            padding: pad as i32,
            dilation: d as i32,
            ..Default::default()
        };
        let tw = if wo <= 16 { 16 } else { 32 };
        let ty = 256 / tw;
        let rpt = if ho >= 4 * ty {
            4
        } else if ho >= 2 * ty {
            2
        } else {
            1
        };
        let tiles = wo.div_ceil(tw) * ho.div_ceil(ty * rpt);
        let cfg = LaunchConfig {
            grid_dim: (tiles as u32, c as u32, n as u32),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let xd = stream.clone_htod(x.to_vec().as_slice()).unwrap();
        let wd = stream.clone_htod(wt.to_vec().as_slice()).unwrap();
        let mut outs = Vec::new();
        for entry in ["dw_conv_fwd", "dw_conv_fwd_k3"] {
            let f = m.load_function(entry).unwrap();
            let mut yd = stream.alloc_zeros::<f32>(n * c * ho * wo).unwrap();
            let mut b = stream.launch_builder(&f);
            b.arg(&xd);
            b.arg(&wd);
            b.arg(&mut yd);
            b.arg(&p);
            // SAFETY: x, w and y have the sizes p describes; the stream orders the copies.
            unsafe { b.launch(cfg) }.unwrap();
            outs.push(stream.clone_dtoh(&yd).unwrap());
        }
        let got = Tensor::from_vec(outs[0].clone(), want.shape()).unwrap();
        same(&what, &got, &want);
        assert_eq!(
            outs[0], outs[1],
            "{what}: dw_conv_fwd_k3 differs from dw_conv_fwd"
        );
    }
}
