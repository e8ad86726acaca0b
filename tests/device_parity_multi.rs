//! CUDA vs CPU parity of the multi-tensor and batch-norm running-statistics methods:
//! `axpy_multi` (kernel ew_axpy_multi), `add_into` (ew_add_into), `sgd_momentum_multi`
//! (sgd_momentum_multi),
//! `batch_norm_running_update` (bn_running_update), the training forward with the running
//! update folded into its statistics kernels (bn_stats, bn_stats_finalize), the fused
//! curvature rule `batch_norm_curvature` (bn_curvature_input) and `batch_norm_eval_constants`
//! (bn_eval_constants, with and without weight and bias). The same kernels run in the host
//! emulation, bit for bit against the CPU backend, in
//! crates/kernel-emulation/tests/multi_tensor.rs.
//!
//! Cases: one tensor; tensors of sizes 1, 1000 and 4097 with empty tensors among them; many
//! small tensors; more than 1.1M elements in all (more than one grid-stride round on an
//! H100/H200: the backend caps the grid at 32 blocks of 256 threads per SM); only empty
//! tensors. Batch norm at C = 1, 3, 600 and 70 000. The second call of each multi-tensor case
//! reuses the cached device pointer tables; a clone of an output taken before the call must
//! keep its values (copy-on-write).
//!
//! Criterion: `||cuda - cpu||_2 / ||cpu||_2 <= 1e-5` per tensor (the arithmetic is the CPU's,
//! but nvcc may fuse a multiply and an add). Without a usable GPU every test prints
//! `skipped: <test>: <reason>` and passes, unless `BAYESNAS_REQUIRE_GPU=1`, when it fails;
//! `BAYESNAS_PARITY_SELFTEST=1` lets the CPU stand in for the GPU (to check the tests
//! themselves); the skip rule is tests/common's `cuda_or_skip`.

use bayesnas_engine::device::SgdStep;
use bayesnas_engine::prelude::*;

#[macro_use]
mod common;
use common::{cpu, rnd, uni, up};

const TOL: f64 = 1e-5;

/// `got` (GPU) against `want` (CPU); an empty tensor only needs its shape.
#[track_caller]
fn same(what: &str, got: &Tensor, want: &Tensor) {
    common::same_on_gpu(what, got, want, TOL, true);
}

/// The tensor shapes of the multi-tensor cases.
fn shape_sets(rng: &mut Rng) -> Vec<Vec<Vec<usize>>> {
    vec![
        vec![vec![4097]],
        vec![vec![1]],
        vec![
            vec![1],
            vec![10, 100],
            vec![4097],
            vec![0],
            vec![3, 5],
            vec![257],
        ],
        vec![
            vec![0],
            vec![5],
            vec![1],
            vec![2, 0, 3],
            vec![0],
            vec![300],
            vec![0],
        ],
        (0..40).map(|i| vec![(i * 7) % 23]).collect(),
        (0..12).map(|_| vec![rng.below(700)]).collect(),
        vec![vec![700_001], vec![0], vec![3, 300_001], vec![17]],
        vec![vec![0], vec![0, 4]],
    ]
}

#[test]
fn axpy_multi_parity() {
    let g = gpu!("axpy_multi_parity");
    let mut rng = Rng::new(101);
    for shapes in shape_sets(&mut rng) {
        let xs: Vec<Tensor> = shapes.iter().map(|s| rnd(s, &mut rng)).collect();
        let ys: Vec<Tensor> = shapes.iter().map(|s| rnd(s, &mut rng)).collect();
        let gxs: Vec<Tensor> = xs.iter().map(|x| up(g, x)).collect();
        let mut gys: Vec<Tensor> = ys.iter().map(|y| up(g, y)).collect();
        let kept: Vec<Tensor> = gys.clone();
        let mut cys = ys.clone();
        // Twice: the second call finds its pointer tables in the cache.
        for alpha in [1.0f32, -0.37] {
            let cx: Vec<&Tensor> = xs.iter().collect();
            let mut cy: Vec<&mut Tensor> = cys.iter_mut().collect();
            cpu().axpy_multi(alpha, &cx, &mut cy).unwrap();
            let gx: Vec<&Tensor> = gxs.iter().collect();
            let mut gy: Vec<&mut Tensor> = gys.iter_mut().collect();
            g.axpy_multi(alpha, &gx, &mut gy).unwrap();
        }
        let sizes: Vec<usize> = xs.iter().map(Tensor::numel).collect();
        for (k, (gy, cy)) in gys.iter().zip(&cys).enumerate() {
            same(&format!("axpy_multi {sizes:?} y{k}"), gy, cy);
        }
        for (k, (kept, y)) in kept.iter().zip(&ys).enumerate() {
            assert_eq!(
                kept.to_vec(),
                y.to_vec(),
                "axpy_multi {sizes:?}: clone of y{k}"
            );
        }
    }
    // Operand errors are errors, not crashes.
    let x = up(g, &rnd(&[4], &mut rng));
    let (mut y1, mut y2) = (up(g, &rnd(&[4], &mut rng)), up(g, &rnd(&[5], &mut rng)));
    assert!(g.axpy_multi(1.0, &[&x], &mut [&mut y1, &mut y2]).is_err());
    assert!(g.axpy_multi(1.0, &[&x], &mut [&mut y2]).is_err());
    if g.device() != Device::Cpu {
        let on_cpu = rnd(&[4], &mut rng);
        assert!(g.axpy_multi(1.0, &[&on_cpu], &mut [&mut y1]).is_err());
    }
}

#[test]
fn sgd_momentum_multi_parity() {
    let g = gpu!("sgd_momentum_multi_parity");
    let mut rng = Rng::new(102);
    for shapes in shape_sets(&mut rng) {
        let ws: Vec<Tensor> = shapes.iter().map(|s| rnd(s, &mut rng)).collect();
        let grads: Vec<Tensor> = shapes.iter().map(|s| rnd(s, &mut rng)).collect();
        let ms: Vec<Tensor> = shapes.iter().map(|s| rnd(s, &mut rng)).collect();
        let (mut cws, mut cms) = (ws.clone(), ms.clone());
        let mut gws: Vec<Tensor> = ws.iter().map(|t| up(g, t)).collect();
        let ggs: Vec<Tensor> = grads.iter().map(|t| up(g, t)).collect();
        let mut gms: Vec<Tensor> = ms.iter().map(|t| up(g, t)).collect();
        let (kept_w, kept_m) = (gws.clone(), gms.clone());
        for step in [
            SgdStep {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 3e-4,
                grad_scale: 0.7,
            },
            SgdStep {
                lr: 0.2,
                momentum: 0.5,
                weight_decay: 1e-2,
                grad_scale: 1.0,
            },
        ] {
            let mut cw: Vec<&mut Tensor> = cws.iter_mut().collect();
            let cg: Vec<&Tensor> = grads.iter().collect();
            let mut cm: Vec<&mut Tensor> = cms.iter_mut().collect();
            cpu()
                .sgd_momentum_multi(&mut cw, &cg, &mut cm, step)
                .unwrap();
            let mut gw: Vec<&mut Tensor> = gws.iter_mut().collect();
            let gg: Vec<&Tensor> = ggs.iter().collect();
            let mut gm: Vec<&mut Tensor> = gms.iter_mut().collect();
            g.sgd_momentum_multi(&mut gw, &gg, &mut gm, step).unwrap();
        }
        let sizes: Vec<usize> = ws.iter().map(Tensor::numel).collect();
        for k in 0..shapes.len() {
            same(&format!("sgd_multi {sizes:?} w{k}"), &gws[k], &cws[k]);
            same(&format!("sgd_multi {sizes:?} m{k}"), &gms[k], &cms[k]);
            assert_eq!(kept_w[k].to_vec(), ws[k].to_vec(), "clone of w{k}");
            assert_eq!(kept_m[k].to_vec(), ms[k].to_vec(), "clone of m{k}");
            assert_eq!(ggs[k].to_vec(), grads[k].to_vec(), "grad {k} is read only");
        }
    }
    let step = SgdStep {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
        grad_scale: 1.0,
    };
    let (mut w, gr, mut m) = (
        up(g, &rnd(&[4], &mut rng)),
        up(g, &rnd(&[5], &mut rng)),
        up(g, &rnd(&[4], &mut rng)),
    );
    assert!(g
        .sgd_momentum_multi(&mut [&mut w], &[&gr], &mut [&mut m], step)
        .is_err());
    assert!(g
        .sgd_momentum_multi(&mut [&mut w], &[], &mut [&mut m], step)
        .is_err());
}

#[test]
fn batch_norm_running_update_parity() {
    let g = gpu!("batch_norm_running_update_parity");
    let mut rng = Rng::new(103);
    for c in [1usize, 3, 600, 70_000] {
        let (rm, rv) = (rnd(&[c], &mut rng), uni(&[c], 0.1, 3.0, &mut rng));
        let (mut crm, mut crv) = (rm.clone(), rv.clone());
        let (mut grm, mut grv) = (up(g, &rm), up(g, &rv));
        let (kept_m, kept_v) = (grm.clone(), grv.clone());
        for (momentum, m) in [(0.1f32, 64usize), (0.37, 2)] {
            let var_factor = (momentum as f64 * m as f64 / (m as f64 - 1.0)) as f32;
            let (mean, var) = (rnd(&[c], &mut rng), uni(&[c], 0.05, 4.0, &mut rng));
            cpu()
                .batch_norm_running_update(&mut crm, &mut crv, &mean, &var, momentum, var_factor)
                .unwrap();
            let (gmean, gvar) = (up(g, &mean), up(g, &var));
            g.batch_norm_running_update(&mut grm, &mut grv, &gmean, &gvar, momentum, var_factor)
                .unwrap();
        }
        same(&format!("bn running mean c{c}"), &grm, &crm);
        same(&format!("bn running var c{c}"), &grv, &crv);
        assert_eq!(
            kept_m.to_vec(),
            rm.to_vec(),
            "c{c}: clone of the running mean"
        );
        assert_eq!(
            kept_v.to_vec(),
            rv.to_vec(),
            "c{c}: clone of the running var"
        );
    }
    let (mut a, mut b) = (up(g, &rnd(&[3], &mut rng)), up(g, &rnd(&[3], &mut rng)));
    let (m4, v3) = (up(g, &rnd(&[4], &mut rng)), up(g, &rnd(&[3], &mut rng)));
    assert!(g
        .batch_norm_running_update(&mut a, &mut b, &m4, &v3, 0.1, 0.1)
        .is_err());
}

/// `add_into` (ew_add_into, the tape's gradient accumulation): 1 to 20 tensors (several
/// launches past 8), sizes 1 to more than 1.1M; a clone of `y` keeps its values; a shape
/// mismatch is refused with `y` unchanged.
#[test]
fn add_into_parity() {
    let g = gpu!("add_into_parity");
    let mut rng = Rng::new(106);
    for (n, k) in [
        (1usize, 1usize),
        (1000, 3),
        (4097, 8),
        (1_200_000, 9),
        (333, 20),
    ] {
        let y = rnd(&[n], &mut rng);
        let xs: Vec<Tensor> = (0..k).map(|_| rnd(&[n], &mut rng)).collect();
        let mut cy = y.clone();
        cpu()
            .add_into(&mut cy, &xs.iter().collect::<Vec<_>>())
            .unwrap();
        let mut gy = up(g, &y);
        let kept = gy.clone();
        let gxs: Vec<Tensor> = xs.iter().map(|x| up(g, x)).collect();
        g.add_into(&mut gy, &gxs.iter().collect::<Vec<_>>())
            .unwrap();
        same(&format!("add_into n{n} k{k}"), &gy, &cy);
        assert_eq!(kept.to_vec(), y.to_vec(), "n{n} k{k}: clone of y");
    }
    let mut y = up(g, &rnd(&[4], &mut rng));
    let before = y.to_vec();
    let (a, b) = (up(g, &rnd(&[4], &mut rng)), up(g, &rnd(&[5], &mut rng)));
    assert!(g.add_into(&mut y, &[&a, &b]).is_err());
    assert_eq!(y.to_vec(), before, "refused call changed y");
}

/// The training forward with the running statistics folded into its statistics kernel
/// (`bn_stats` at few channels, `bn_stats_finalize` after the split sums at many), and the
/// fused curvature rule `batch_norm_curvature` (bn_curvature_input), with and without weight.
#[test]
fn batch_norm_fused_running_and_curvature_parity() {
    let g = gpu!("batch_norm_fused_running_and_curvature_parity");
    let mut rng = Rng::new(105);
    for (n, c, s) in [
        (2usize, 3usize, 25usize),
        (8, 64, 64),
        (2, 600, 4),
        (64, 16, 9),
    ] {
        let x = rnd(&[n, c, s], &mut rng);
        let (rm, rv) = (rnd(&[c], &mut rng), uni(&[c], 0.1, 3.0, &mut rng));
        let (w, b) = (rnd(&[c], &mut rng), rnd(&[c], &mut rng));
        let momentum = 0.1f32;
        let var_factor = (momentum as f64 * (n * s) as f64 / ((n * s) as f64 - 1.0)) as f32;
        let (mut crm, mut crv) = (rm.clone(), rv.clone());
        let (mut grm, mut grv) = (up(g, &rm), up(g, &rv));
        let what = format!("bn n{n} c{c} s{s}");
        let run = |be: &dyn bayesnas_engine::Backend,
                   x: &Tensor,
                   w: &Tensor,
                   b: &Tensor,
                   rm: &mut Tensor,
                   rv: &mut Tensor| {
            let running = bayesnas_engine::device::RunningStats {
                mean: rm,
                var: rv,
                momentum,
                var_factor,
            };
            be.batch_norm_train_forward_with(x, Some(w), Some(b), 1e-5, Some(running))
                .unwrap()
        };
        let cf = run(cpu(), &x, &w, &b, &mut crm, &mut crv);
        let gf = run(g, &up(g, &x), &up(g, &w), &up(g, &b), &mut grm, &mut grv);
        same(&format!("{what} y"), &gf.y, &cf.y);
        same(&format!("{what} mean"), &gf.mean, &cf.mean);
        same(&format!("{what} running mean"), &grm, &crm);
        same(&format!("{what} running var"), &grv, &crv);
        let hy = uni(&[n, c, s], 0.1, 2.0, &mut rng);
        for with_w in [false, true] {
            let gw = up(g, &w);
            same(
                &format!("{what} curvature weight {with_w}"),
                &g.batch_norm_curvature(&up(g, &hy), &gf.invstd, with_w.then_some(&gw))
                    .unwrap(),
                &cpu()
                    .batch_norm_curvature(&hy, &cf.invstd, with_w.then_some(&w))
                    .unwrap(),
            );
        }
    }
    // A running mean of the wrong length is refused before anything is written.
    let x = up(g, &rnd(&[2, 3, 4], &mut rng));
    let (mut a, mut b) = (up(g, &rnd(&[4], &mut rng)), up(g, &rnd(&[3], &mut rng)));
    let kept = b.to_vec();
    let running = bayesnas_engine::device::RunningStats {
        mean: &mut a,
        var: &mut b,
        momentum: 0.1,
        var_factor: 0.1,
    };
    assert!(g
        .batch_norm_train_forward_with(&x, None, None, 1e-5, Some(running))
        .is_err());
    assert_eq!(b.to_vec(), kept);
}

/// Batch norm fused with ReLU (`bn_relu_fwd_apply`, the `bn_relu_bwd_*` kernels in both the
/// whole-channel and the split form, `bn_relu_curvature_input`) against the CPU's fused
/// methods, with and without affine parameters; the shapes take both reduction forms.
#[test]
fn batch_norm_relu_parity() {
    let g = gpu!("batch_norm_relu_parity");
    let mut rng = Rng::new(106);
    for (n, c, s) in [
        (2usize, 3usize, 25usize),
        (8, 64, 64),
        (2, 600, 4),
        (64, 16, 9),
    ] {
        let x = rnd(&[n, c, s], &mut rng);
        let dy = rnd(&[n, c, s], &mut rng);
        let hy = uni(&[n, c, s], 0.1, 2.0, &mut rng);
        let (w, b) = (rnd(&[c], &mut rng), rnd(&[c], &mut rng));
        let (gx, gdy, ghy, gw, gb) = (up(g, &x), up(g, &dy), up(g, &hy), up(g, &w), up(g, &b));
        for affine in [false, true] {
            let what = format!("bn_relu n{n} c{c} s{s} affine {affine}");
            let cf = cpu()
                .batch_norm_relu_train_forward(
                    &x,
                    affine.then_some(&w),
                    affine.then_some(&b),
                    1e-5,
                    None,
                )
                .unwrap();
            let gf = g
                .batch_norm_relu_train_forward(
                    &gx,
                    affine.then_some(&gw),
                    affine.then_some(&gb),
                    1e-5,
                    None,
                )
                .unwrap();
            same(&format!("{what} y"), &gf.y, &cf.y);
            // The GPU's own rectified output masks its backward (a sign flip of a value
            // near 0 between devices would otherwise differ in one element).
            let cy = gf.y.to_device(Device::Cpu).unwrap();
            let cg = cpu()
                .batch_norm_relu_backward(&dy, &cy, &x, &cf.mean, &cf.invstd, affine.then_some(&w))
                .unwrap();
            let gg = g
                .batch_norm_relu_backward(
                    &gdy,
                    &gf.y,
                    &gx,
                    &gf.mean,
                    &gf.invstd,
                    affine.then_some(&gw),
                )
                .unwrap();
            same(&format!("{what} dx"), &gg.dx, &cg.dx);
            same(&format!("{what} dweight"), &gg.dweight, &cg.dweight);
            same(&format!("{what} dbias"), &gg.dbias, &cg.dbias);
            same(
                &format!("{what} curvature"),
                &g.batch_norm_relu_curvature(&ghy, &gf.y, &gf.invstd, affine.then_some(&gw))
                    .unwrap(),
                &cpu()
                    .batch_norm_relu_curvature(&hy, &cy, &cf.invstd, affine.then_some(&w))
                    .unwrap(),
            );
        }
    }
}

/// `sep_conv_fwd` (depthwise then pointwise in one launch) against the CPU's two
/// convolutions: the search space's geometries at its paper shape, a channel count whose tile
/// is shorter than 64 positions (600 channels), and the two-launch fallback past the shared
/// memory (more than SEP_SMEM = 8192 channels).
#[test]
fn depthwise_pointwise_parity() {
    let g = gpu!("depthwise_pointwise_parity");
    let mut rng = Rng::new(107);
    for ((n, c, co, hw), (k, stride, dil)) in [
        (
            (4usize, 36usize, 36usize, 32usize),
            (3usize, 1usize, 1usize),
        ),
        ((4, 36, 36, 32), (5, 1, 1)),
        ((4, 72, 72, 16), (3, 2, 1)),
        ((4, 72, 72, 16), (5, 1, 2)),
        ((2, 144, 144, 8), (5, 2, 2)),
        ((2, 600, 40, 7), (3, 1, 1)),
        ((1, 8200, 3, 3), (3, 1, 1)),
    ] {
        let spec = Conv2dSpec::new()
            .stride(stride)
            .padding(dil * (k - 1) / 2)
            .dilation(dil)
            .groups(c);
        let x = rnd(&[n, c, hw, hw], &mut rng);
        let (wd, wp) = (rnd(&[c, 1, k, k], &mut rng), rnd(&[co, c, 1, 1], &mut rng));
        let (cm, cy) = cpu()
            .depthwise_pointwise_forward(&x, &wd, spec, &wp)
            .unwrap();
        let (gm, gy) = g
            .depthwise_pointwise_forward(&up(g, &x), &up(g, &wd), spec, &up(g, &wp))
            .unwrap();
        let what = format!("depthwise_pointwise n{n} c{c} co{co} {hw}x{hw} k{k} s{stride} d{dil}");
        same(&format!("{what} mid"), &gm, &cm);
        same(&format!("{what} y"), &gy, &cy);
    }
}

#[test]
fn batch_norm_eval_constants_parity() {
    let g = gpu!("batch_norm_eval_constants_parity");
    let mut rng = Rng::new(104);
    for c in [1usize, 3, 600, 70_000] {
        let (rm, rv) = (rnd(&[c], &mut rng), uni(&[c], 1e-3, 5.0, &mut rng));
        let (w, b) = (rnd(&[c], &mut rng), rnd(&[c], &mut rng));
        let (grm, grv, gw, gb) = (up(g, &rm), up(g, &rv), up(g, &w), up(g, &b));
        for eps in [1e-5f32, 1e-3] {
            for (has_w, has_b) in [(true, true), (false, false), (true, false), (false, true)] {
                let what = format!("bn eval constants c{c} eps {eps} weight {has_w} bias {has_b}");
                let want = cpu()
                    .batch_norm_eval_constants(
                        &rm,
                        &rv,
                        has_w.then_some(&w),
                        has_b.then_some(&b),
                        eps,
                    )
                    .unwrap();
                let got = g
                    .batch_norm_eval_constants(
                        &grm,
                        &grv,
                        has_w.then_some(&gw),
                        has_b.then_some(&gb),
                        eps,
                    )
                    .unwrap();
                same(&format!("{what}: slope"), &got.0, &want.0);
                same(&format!("{what}: shift"), &got.1, &want.1);
                same(&format!("{what}: invstd"), &got.2, &want.2);
            }
        }
    }
    let (rm, rv, w4) = (
        up(g, &rnd(&[3], &mut rng)),
        up(g, &uni(&[3], 0.1, 1.0, &mut rng)),
        up(g, &rnd(&[4], &mut rng)),
    );
    assert!(g
        .batch_norm_eval_constants(&rm, &rv, Some(&w4), None, 1e-5)
        .is_err());
}
