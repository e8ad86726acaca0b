//! CUDA vs CPU parity of every `Backend` method, and of whole autograd passes.
//!
//! Each test draws random inputs (never zeros) of several shapes, including odd sizes, runs
//! the method on the CPU backend (the reference) and on CUDA device 0, and compares with the
//! norm-relative criterion `||cuda - cpu||_2 / ||cpu||_2 <= 1e-4` (argmax offsets must be
//! equal). Without a usable GPU every test prints `skipped: <test>: <reason>` and passes,
//! unless `BAYESNAS_REQUIRE_GPU=1`, when it fails.

#[macro_use]
mod common;

use bayesnas_engine::device::{counters, Binary, LassoGroups, SgdStep, Unary};
use bayesnas_engine::prelude::*;
use common::{cpu, pool_spec, rnd, uni, up};

const TOL: f64 = 1e-4;

#[track_caller]
fn same(what: &str, got: &Tensor, want: &Tensor) {
    common::same_on_gpu(what, got, want, TOL, false);
}

#[track_caller]
fn close64(what: &str, got: f64, want: f64) {
    let rel = (got - want).abs() / want.abs().max(1e-30);
    assert!(rel <= TOL, "{what}: {got} vs {want} (relative {rel:.3e})");
}

#[test]
fn memory_roundtrip_and_copy_on_write() {
    let g = gpu!("memory_roundtrip_and_copy_on_write");
    let mut rng = Rng::new(1);
    for shape in [
        vec![1],
        vec![7],
        vec![3, 5, 7, 9],
        vec![100_003],
        vec![2, 0, 3],
    ] {
        let x = rnd(&shape, &mut rng);
        let d = up(g, &x);
        assert_eq!(d.device(), g.device());
        assert_eq!(d.to_vec(), x.to_vec(), "upload/download is exact");
        assert_eq!(d.to_device(Device::Cpu).unwrap().to_vec(), x.to_vec());
        let z = g.zeros(&shape).unwrap();
        assert!(z.to_vec().iter().all(|&v| v == 0.0));
        // A clone shares the buffer; writing one leaves the other unchanged.
        let mut c = d.clone();
        g.axpy(1.0, &d, &mut c).unwrap();
        assert_eq!(d.to_vec(), x.to_vec(), "clone was written through");
        let twice: Vec<f32> = x.to_vec().iter().map(|v| v + v).collect();
        assert_eq!(c.to_vec(), twice);
    }
    // Mixing devices is an error, not a crash.
    if g.device() != Device::Cpu {
        let x = rnd(&[4], &mut rng);
        assert!(g.unary(&x, Unary::Relu).is_err());
    }
}

#[test]
fn elementwise_and_reductions() {
    let g = gpu!("elementwise_and_reductions");
    let c = cpu();
    let mut rng = Rng::new(2);
    for shape in [
        vec![1],
        vec![255],
        vec![257],
        vec![5, 3, 11, 13],
        vec![100_003],
    ] {
        let (a, b) = (rnd(&shape, &mut rng), rnd(&shape, &mut rng));
        let (da, db) = (up(g, &a), up(g, &b));
        for op in [Unary::Relu, Unary::Square, Unary::Scale(-1.7)] {
            let want = c.unary(&a, op).unwrap();
            if want.to_vec().iter().all(|&v| v == 0.0) {
                continue; // relu of one negative number
            }
            same(
                &format!("unary {op:?} {shape:?}"),
                &g.unary(&da, op).unwrap(),
                &want,
            );
        }
        for op in [Binary::Add, Binary::Sub, Binary::Mul, Binary::ReluMask] {
            let want = c.binary(&a, &b, op).unwrap();
            if want.to_vec().iter().all(|&v| v == 0.0) {
                continue;
            }
            same(
                &format!("binary {op:?} {shape:?}"),
                &g.binary(&da, &db, op).unwrap(),
                &want,
            );
        }
        let (mut y, mut dy) = (b.clone(), db.clone());
        c.axpy(0.37, &a, &mut y).unwrap();
        g.axpy(0.37, &da, &mut dy).unwrap();
        same("axpy", &dy, &y);
        close64("sum_all", g.sum_all(&da).unwrap(), c.sum_all(&a).unwrap());
        close64("dot", g.dot(&da, &db).unwrap(), c.dot(&a, &b).unwrap());
        close64("dot self", g.dot(&da, &da).unwrap(), c.dot(&a, &a).unwrap());
        let n = shape[0];
        let sc: Vec<f32> = (0..n).map(|i| 0.5 + (i % 3) as f32).collect();
        same(
            "scale_samples",
            &g.scale_samples(&da, &sc).unwrap(),
            &c.scale_samples(&a, &sc).unwrap(),
        );
    }
    // Shape errors are errors on the GPU too.
    let (a, b) = (up(g, &rnd(&[3], &mut rng)), up(g, &rnd(&[4], &mut rng)));
    assert!(g.binary(&a, &b, Binary::Add).is_err());
    assert!(g.dot(&a, &b).is_err());
}

#[test]
fn matmul_all_transposes() {
    let g = gpu!("matmul_all_transposes");
    let c = cpu();
    let mut rng = Rng::new(3);
    for (m, k, n) in [
        (1, 1, 1),
        (7, 13, 5),
        (64, 300, 10),
        (33, 1, 17),
        (128, 256, 100),
    ] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = rnd(&if ta { [k, m] } else { [m, k] }, &mut rng);
            let b = rnd(&if tb { [n, k] } else { [k, n] }, &mut rng);
            same(
                &format!("matmul {m}x{k}x{n} ta={ta} tb={tb}"),
                &g.matmul(&up(g, &a), ta, &up(g, &b), tb).unwrap(),
                &c.matmul(&a, ta, &b, tb).unwrap(),
            );
        }
    }
    let a = up(g, &rnd(&[3, 4], &mut rng));
    assert!(g.matmul(&a, false, &a, false).is_err());
}

/// (x shape, w shape, spec) of every convolution family the supernet uses, odd sizes too.
fn conv_cases() -> Vec<([usize; 4], [usize; 4], Conv2dSpec)> {
    let s = Conv2dSpec::new;
    let mut v = Vec::new();
    // Depthwise k3/k5, dilation 1/2, stride 1/2 (sep_conv and dil_conv).
    for (c, hw) in [(16, 32), (5, 9), (32, 16)] {
        for k in [3, 5] {
            for d in [1, 2] {
                for st in [1, 2] {
                    let p = d * (k - 1) / 2;
                    v.push((
                        [3, c, hw, hw + 1],
                        [c, 1, k, k],
                        s().stride(st).padding(p).dilation(d).groups(c),
                    ));
                }
            }
        }
    }
    // Dense 3x3 stem, and with stride 2 and an odd image.
    v.push(([4, 3, 32, 32], [16, 3, 3, 3], s().padding(1)));
    v.push(([2, 3, 15, 17], [8, 3, 3, 3], s().padding(1).stride(2)));
    // Pointwise stride 1 and 2 (factorized reduce).
    v.push(([4, 16, 16, 16], [32, 16, 1, 1], s()));
    v.push(([3, 7, 9, 11], [5, 7, 1, 1], s()));
    v.push(([4, 16, 16, 16], [8, 16, 1, 1], s().stride(2)));
    v.push(([2, 5, 9, 9], [3, 5, 1, 1], s().stride(2)));
    // Grouped (not depthwise) and a depthwise channel multiplier.
    v.push(([2, 8, 10, 10], [12, 2, 3, 3], s().padding(1).groups(4)));
    v.push((
        [3, 6, 7, 9],
        [6, 3, 3, 3],
        s().padding(2).dilation(2).groups(2),
    ));
    v.push(([2, 4, 8, 8], [8, 1, 3, 3], s().padding(1).groups(4)));
    v
}

#[test]
fn convolutions_forward_and_backward() {
    let g = gpu!("convolutions_forward_and_backward");
    let c = cpu();
    let mut rng = Rng::new(4);
    for (xs, ws, spec) in conv_cases() {
        let what = format!("conv x{xs:?} w{ws:?} {spec:?}");
        let (x, w) = (rnd(&xs, &mut rng), rnd(&ws, &mut rng));
        let (dx_, dw_) = (up(g, &x), up(g, &w));
        let y = c.conv2d_forward(&x, &w, spec).unwrap();
        same(
            &format!("{what} forward"),
            &g.conv2d_forward(&dx_, &dw_, spec).unwrap(),
            &y,
        );
        let dy = rnd(y.shape(), &mut rng);
        let ddy = up(g, &dy);
        same(
            &format!("{what} backward_input"),
            &g.conv2d_backward_input(&ddy, &dw_, spec, &xs).unwrap(),
            &c.conv2d_backward_input(&dy, &w, spec, &xs).unwrap(),
        );
        same(
            &format!("{what} backward_weight"),
            &g.conv2d_backward_weight(&dx_, &ddy, spec, &ws).unwrap(),
            &c.conv2d_backward_weight(&x, &dy, spec, &ws).unwrap(),
        );
        let hy = uni(y.shape(), 0.1, 2.0, &mut rng);
        same(
            &format!("{what} backward_input_sq"),
            &g.conv2d_backward_input_sq(&up(g, &hy), &dw_, spec, &xs)
                .unwrap(),
            &c.conv2d_backward_input_sq(&hy, &w, spec, &xs).unwrap(),
        );
        same(
            &format!("{what} backward_weight_sq"),
            &g.conv2d_backward_weight_sq(&dx_, &up(g, &hy), spec, &ws)
                .unwrap(),
            &c.conv2d_backward_weight_sq(&x, &hy, spec, &ws).unwrap(),
        );
    }
    // Invalid geometry is refused like on the CPU.
    let x = up(g, &rnd(&[1, 4, 3, 3], &mut rng));
    let w = up(g, &rnd(&[4, 1, 5, 5], &mut rng));
    assert!(g
        .conv2d_forward(&x, &w, Conv2dSpec::new().groups(4))
        .is_err());
}

#[test]
fn batch_norm_all_paths() {
    let g = gpu!("batch_norm_all_paths");
    let c = cpu();
    let mut rng = Rng::new(5);
    for shape in [
        vec![8, 16, 8, 8],
        vec![3, 5, 7, 9],
        vec![64, 10],
        vec![2, 3, 1, 5],
    ] {
        let ch = shape[1];
        let x = uni(&shape, -1.0, 3.0, &mut rng);
        let (w, b) = (uni(&[ch], 0.5, 1.5, &mut rng), rnd(&[ch], &mut rng));
        let dx = up(g, &x);
        let (dw, db) = (up(g, &w), up(g, &b));
        for affine in [false, true] {
            let what = format!("bn {shape:?} affine={affine}");
            let (wo, bo) = if affine {
                (Some(&w), Some(&b))
            } else {
                (None, None)
            };
            let (dwo, dbo) = if affine {
                (Some(&dw), Some(&db))
            } else {
                (None, None)
            };
            let f = c.batch_norm_train_forward(&x, wo, bo, 1e-5).unwrap();
            let gf = g.batch_norm_train_forward(&dx, dwo, dbo, 1e-5).unwrap();
            same(&format!("{what} y"), &gf.y, &f.y);
            same(&format!("{what} mean"), &gf.mean, &f.mean);
            same(&format!("{what} var"), &gf.var, &f.var);
            same(&format!("{what} invstd"), &gf.invstd, &f.invstd);
            let dy = rnd(&shape, &mut rng);
            let gr = c
                .batch_norm_backward(&dy, &x, &f.mean, &f.invstd, wo)
                .unwrap();
            let ggr = g
                .batch_norm_backward(&up(g, &dy), &dx, &gf.mean, &gf.invstd, dwo)
                .unwrap();
            same(&format!("{what} dx"), &ggr.dx, &gr.dx);
            same(&format!("{what} dweight"), &ggr.dweight, &gr.dweight);
            same(&format!("{what} dbias"), &ggr.dbias, &gr.dbias);
            same(
                &format!("{what} channel_affine"),
                &g.channel_affine(&dx, &dw, if affine { Some(&db) } else { None })
                    .unwrap(),
                &c.channel_affine(&x, &w, if affine { Some(&b) } else { None })
                    .unwrap(),
            );
            let y = rnd(&shape, &mut rng);
            let (yo, dyo) = if affine {
                (Some(&y), Some(up(g, &y)))
            } else {
                (None, None)
            };
            same(
                &format!("{what} channel_sums"),
                &g.channel_sums(&dx, dyo.as_ref()).unwrap(),
                &c.channel_sums(&x, yo).unwrap(),
            );
        }
    }
}

#[test]
fn pooling_forward_and_backward() {
    let g = gpu!("pooling_forward_and_backward");
    let c = cpu();
    let mut rng = Rng::new(6);
    let specs = [pool_spec(3, 1, 1), pool_spec(3, 2, 1), pool_spec(2, 2, 0)];
    for shape in [[4usize, 16, 32, 32], [3, 5, 7, 9], [2, 3, 16, 15]] {
        let x = rnd(&shape, &mut rng);
        let dx = up(g, &x);
        for spec in specs {
            let what = format!("pool {shape:?} {spec:?}");
            let (y, arg) = c.max_pool2d_forward(&x, spec).unwrap();
            let (gy, garg) = g.max_pool2d_forward(&dx, spec).unwrap();
            same(&format!("{what} max y"), &gy, &y);
            assert_eq!(garg.to_vec(), arg.to_vec(), "{what}: argmax offsets");
            let dy = rnd(y.shape(), &mut rng);
            let ddy = up(g, &dy);
            same(
                &format!("{what} max backward"),
                &g.max_pool2d_backward(&garg, &ddy, &shape).unwrap(),
                &c.max_pool2d_backward(&arg, &dy, &shape).unwrap(),
            );
            let ay = c.avg_pool2d_forward(&x, spec).unwrap();
            same(
                &format!("{what} avg y"),
                &g.avg_pool2d_forward(&dx, spec).unwrap(),
                &ay,
            );
            for power in [1, 2] {
                same(
                    &format!("{what} avg backward power {power}"),
                    &g.avg_pool2d_backward(&ddy, spec, &shape, power).unwrap(),
                    &c.avg_pool2d_backward(&dy, spec, &shape, power).unwrap(),
                );
            }
        }
        let gy = c.global_avg_pool_forward(&x).unwrap();
        same("gap forward", &g.global_avg_pool_forward(&dx).unwrap(), &gy);
        let dy = rnd(gy.shape(), &mut rng);
        for power in [1, 2] {
            same(
                &format!("gap backward {power}"),
                &g.global_avg_pool_backward(&up(g, &dy), &shape, power)
                    .unwrap(),
                &c.global_avg_pool_backward(&dy, &shape, power).unwrap(),
            );
        }
    }
}

#[test]
fn structure_ops() {
    let g = gpu!("structure_ops");
    let c = cpu();
    let mut rng = Rng::new(7);
    for (n, h, w) in [(4, 8, 8), (3, 5, 7)] {
        let xs: Vec<Tensor> = [3, 16, 1, 5]
            .iter()
            .map(|&ch| rnd(&[n, ch, h, w], &mut rng))
            .collect();
        let dxs: Vec<Tensor> = xs.iter().map(|x| up(g, x)).collect();
        let y = c.concat_channels(&xs.iter().collect::<Vec<_>>()).unwrap();
        let gy = g.concat_channels(&dxs.iter().collect::<Vec<_>>()).unwrap();
        same("concat", &gy, &y);
        let sizes = [7, 2, 16];
        let parts = c.split_channels(&y, &sizes).unwrap();
        let gparts = g.split_channels(&gy, &sizes).unwrap();
        for (i, (gp, p)) in gparts.iter().zip(&parts).enumerate() {
            same(&format!("split {i}"), gp, p);
        }
        let x = &xs[1];
        let sc = c.shift_crop(x).unwrap();
        same("shift_crop", &g.shift_crop(&dxs[1]).unwrap(), &sc);
        let dy = rnd(sc.shape(), &mut rng);
        same(
            "shift_crop_backward",
            &g.shift_crop_backward(&up(g, &dy), x.shape()).unwrap(),
            &c.shift_crop_backward(&dy, x.shape()).unwrap(),
        );
    }
}

#[test]
fn select_columns() {
    let g = gpu!("select_columns");
    let c = cpu();
    let mut rng = Rng::new(17);
    for (n, cols, idx) in [
        (5usize, 12usize, vec![11usize, 0, 4, 5, 9]),
        (64, 400, (0..400).rev().step_by(3).collect::<Vec<_>>()),
        (1, 1, vec![0]),
    ] {
        let what = format!("select_columns n{n} cols{cols} m{}", idx.len());
        // Copies: equal bit for bit.
        let bits = |t: &Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let x = rnd(&[n, cols], &mut rng);
        let (gy, y) = (
            g.select_columns(&up(g, &x), &idx).unwrap(),
            c.select_columns(&x, &idx).unwrap(),
        );
        same(&what, &gy, &y);
        assert_eq!(bits(&gy), bits(&y), "{what}: bits");
        let dy = rnd(&[n, idx.len()], &mut rng);
        let (gdx, dx) = (
            g.select_columns_backward(&up(g, &dy), &idx, cols).unwrap(),
            c.select_columns_backward(&dy, &idx, cols).unwrap(),
        );
        same(&format!("{what} backward"), &gdx, &dx);
        assert_eq!(bits(&gdx), bits(&dx), "{what} backward: bits");
    }
}

#[test]
fn fused_mixed_op() {
    let g = gpu!("fused_mixed_op");
    let c = cpu();
    let mut rng = Rng::new(8);
    for k in 3..=8 {
        for shape in [[4usize, 16, 8, 8], [3, 5, 7, 9], [2, 32, 16, 16]] {
            let what = format!("mixed K={k} {shape:?}");
            let xs: Vec<Tensor> = (0..k).map(|_| rnd(&shape, &mut rng)).collect();
            let dxs: Vec<Tensor> = xs.iter().map(|x| up(g, x)).collect();
            let (xr, dxr): (Vec<&Tensor>, Vec<&Tensor>) =
                (xs.iter().collect(), dxs.iter().collect());
            let s = uni(&[k], 0.2, 1.5, &mut rng);
            let s0 = uni(&[1], 0.5, 1.5, &mut rng);
            let (ds, ds0) = (up(g, &s), up(g, &s0));
            same(
                &format!("{what} forward"),
                &g.mixed_forward(&dxr, &ds0, &ds).unwrap(),
                &c.mixed_forward(&xr, &s0, &s).unwrap(),
            );
            let dy = rnd(&shape, &mut rng);
            let (gd, r) = c.mixed_backward(&xr, &dy, &s0, &s).unwrap();
            let (ggd, gr) = g.mixed_backward(&dxr, &up(g, &dy), &ds0, &ds).unwrap();
            for (i, (a, b)) in ggd.iter().zip(&gd).enumerate() {
                same(&format!("{what} dx{i}"), a, b);
            }
            same(&format!("{what} r"), &gr, &r);
            let hy = uni(&shape, 0.1, 2.0, &mut rng);
            let (hx, hs, hs0) = c.mixed_curvature(&xr, &hy, &s0, &s).unwrap();
            let (ghx, ghs, ghs0) = g.mixed_curvature(&dxr, &up(g, &hy), &ds0, &ds).unwrap();
            for (i, (a, b)) in ghx.iter().zip(&hx).enumerate() {
                same(&format!("{what} hx{i}"), a, b);
            }
            same(&format!("{what} h_s"), &ghs, &hs);
            same(&format!("{what} h_s0"), &ghs0, &hs0);
        }
    }
}

/// `mixed_switch_grads` from a random `r` of several `[N, K]` shapes (K = 300 > one block),
/// and from the device's own `mixed_backward` output (the training step's path: no host
/// read, one launch).
#[test]
fn mixed_switch_grads() {
    let g = gpu!("mixed_switch_grads");
    let c = cpu();
    let mut rng = Rng::new(12);
    for (n, k) in [(1usize, 1usize), (1, 5), (7, 1), (4, 17), (64, 8), (3, 300)] {
        let what = format!("mixed_switch_grads n{n} k{k}");
        let r = rnd(&[n, k], &mut rng);
        let s = uni(&[k], 0.2, 1.5, &mut rng);
        let s0 = uni(&[1], 0.5, 1.5, &mut rng);
        let (ds, ds0) = c.mixed_switch_grads(&r, &s0, &s).unwrap();
        let (gr, gs0, gs) = (up(g, &r), up(g, &s0), up(g, &s));
        let ((gds, gds0), counts) =
            counters::measure(|| g.mixed_switch_grads(&gr, &gs0, &gs).unwrap());
        same(&format!("{what} ds"), &gds, &ds);
        same(&format!("{what} ds0"), &gds0, &ds0);
        assert_eq!(counts.host_reads, 0, "{what}: host reads");
        assert_eq!(counts.launches, 1, "{what}: launches");
    }
    let shape = [4usize, 16, 8, 8];
    let k = 5;
    let xs: Vec<Tensor> = (0..k).map(|_| rnd(&shape, &mut rng)).collect();
    let dxs: Vec<Tensor> = xs.iter().map(|x| up(g, x)).collect();
    let (xr, dxr): (Vec<&Tensor>, Vec<&Tensor>) = (xs.iter().collect(), dxs.iter().collect());
    let s = uni(&[k], 0.2, 1.5, &mut rng);
    let s0 = uni(&[1], 0.5, 1.5, &mut rng);
    let (gs, gs0) = (up(g, &s), up(g, &s0));
    let dy = rnd(&shape, &mut rng);
    let (_, r) = c.mixed_backward(&xr, &dy, &s0, &s).unwrap();
    let (_, gr) = g.mixed_backward(&dxr, &up(g, &dy), &gs0, &gs).unwrap();
    let (ds, ds0) = c.mixed_switch_grads(&r, &s0, &s).unwrap();
    let (gds, gds0) = g.mixed_switch_grads(&gr, &gs0, &gs).unwrap();
    same("mixed_switch_grads after mixed_backward ds", &gds, &ds);
    same("mixed_switch_grads after mixed_backward ds0", &gds0, &ds0);
}

/// `group_lasso_grad`: random groups of varied sizes over tensors of varied sizes (one group
/// empty, one with all members zero), random starting gradients; the updated gradients and
/// the penalty against the CPU backend. One launch, no host read; no groups: penalty 0.
#[test]
fn group_lasso_grad() {
    let g = gpu!("group_lasso_grad");
    let c = cpu();
    let mut rng = Rng::new(13);
    for (shapes, n_groups, max_size) in [
        (
            vec![vec![7usize], vec![3, 5], vec![1], vec![2, 3, 4]],
            9usize,
            4usize,
        ),
        (vec![vec![1000], vec![17, 9]], 500, 2),
        (vec![vec![16, 8, 3, 3], vec![100_003]], 2000, 20),
    ] {
        let what = format!("group_lasso_grad {shapes:?} {n_groups} groups");
        let sizes: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
        let gs = common::random_groups(&sizes, n_groups, max_size, true, &mut rng);
        let mut vals: Vec<Vec<f32>> = shapes.iter().map(|s| rnd(s, &mut rng).to_vec()).collect();
        // a non-empty group whose members are all zero: no gradient, no penalty
        if let Some(z) = (0..gs.len()).find(|&i| gs.start[i + 1] > gs.start[i]) {
            for m in gs.start[z]..gs.start[z + 1] {
                vals[gs.tensor[m]][gs.elem[m]] = 0.0;
            }
        }
        let vals: Vec<Tensor> = vals
            .into_iter()
            .zip(&shapes)
            .map(|(v, s)| Tensor::from_vec(v, s).unwrap())
            .collect();
        let mut grads: Vec<Tensor> = shapes.iter().map(|s| rnd(s, &mut rng)).collect();
        let gvals: Vec<Tensor> = vals.iter().map(|v| up(g, v)).collect();
        let mut ggrads: Vec<Tensor> = grads.iter().map(|v| up(g, v)).collect();
        let vr: Vec<&Tensor> = vals.iter().collect();
        let mut gr: Vec<&mut Tensor> = grads.iter_mut().collect();
        let pen = c.group_lasso_grad(&vr, &mut gr, &gs).unwrap();
        let gvr: Vec<&Tensor> = gvals.iter().collect();
        let mut ggr: Vec<&mut Tensor> = ggrads.iter_mut().collect();
        let (gpen, counts) = counters::measure(|| g.group_lasso_grad(&gvr, &mut ggr, &gs).unwrap());
        assert_eq!(counts.host_reads, 0, "{what}: host reads");
        assert_eq!(counts.launches, 1, "{what}: launches");
        assert_eq!(gpen.device(), g.device(), "{what}: penalty left the device");
        for (i, (a, b)) in ggrads.iter().zip(&grads).enumerate() {
            same(&format!("{what} gradient {i}"), a, b);
        }
        close64(
            &format!("{what} penalty"),
            gpen.item().unwrap() as f64,
            pen.item().unwrap() as f64,
        );
    }
    let x = up(g, &rnd(&[5], &mut rng));
    let mut d = up(g, &rnd(&[5], &mut rng));
    let before = d.to_vec();
    let none = LassoGroups {
        start: vec![0],
        ..Default::default()
    };
    let pen = g.group_lasso_grad(&[&x], &mut [&mut d], &none).unwrap();
    assert_eq!(pen.item().unwrap(), 0.0, "no groups: penalty");
    assert_eq!(d.to_vec(), before, "no groups: gradient changed");
}

#[test]
fn softmax_cross_entropy_and_sgd() {
    let g = gpu!("softmax_cross_entropy_and_sgd");
    let c = cpu();
    let mut rng = Rng::new(9);
    for (b, k) in [(1, 2), (64, 10), (7, 1000), (33, 3)] {
        let z = uni(&[b, k], -4.0, 4.0, &mut rng);
        let labels: Vec<u32> = (0..b).map(|_| rng.below(k) as u32).collect();
        let (p, l) = c.softmax_cross_entropy(&z, &labels).unwrap();
        let (gp, gl) = g.softmax_cross_entropy(&up(g, &z), &labels).unwrap();
        same(&format!("softmax {b}x{k}"), &gp, &p);
        close64(
            "cross-entropy",
            gl.item().unwrap() as f64,
            l.item().unwrap() as f64,
        );
        let gpu_probs = up(g, &p);
        same(
            &format!("softmax ce backward {b}x{k}"),
            &g.softmax_cross_entropy_backward(&gpu_probs, &labels)
                .unwrap(),
            &c.softmax_cross_entropy_backward(&p, &labels).unwrap(),
        );
        same(
            &format!("softmax ce curvature seed {b}x{k}"),
            &g.softmax_cross_entropy_curvature(&gpu_probs).unwrap(),
            &c.softmax_cross_entropy_curvature(&p).unwrap(),
        );
        assert!(g
            .softmax_cross_entropy(&up(g, &z), &vec![k as u32; b])
            .is_err());
    }
    for n in [1, 1000, 100_003] {
        let (w, gr, m) = (
            rnd(&[n], &mut rng),
            rnd(&[n], &mut rng),
            rnd(&[n], &mut rng),
        );
        let (mut cw, mut cm) = (w.clone(), m.clone());
        let (mut gw, mut gm) = (up(g, &w), up(g, &m));
        let ggr = up(g, &gr);
        let step = SgdStep {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 3e-4,
            grad_scale: 0.7,
        };
        for _ in 0..3 {
            c.sgd_momentum(&mut cw, &gr, &mut cm, step).unwrap();
            g.sgd_momentum(&mut gw, &ggr, &mut gm, step).unwrap();
        }
        same("sgd weight", &gw, &cw);
        same("sgd momentum", &gm, &cm);
    }
}

// ------------------------------------------------------------------------------------------
// Autograd level: a small conv net with switches, gradients and curvatures
// ------------------------------------------------------------------------------------------

struct Net {
    store: ParamStore,
    ids: Vec<ParamId>,
}

fn small_net(rng: &mut Rng) -> Net {
    let mut store = ParamStore::new();
    let mut ids = Vec::new();
    let mut add = |name: &str, t: Tensor| ids.push(store.add(name, "w", t).unwrap());
    add("stem", Tensor::kaiming_normal(&[8, 3, 3, 3], rng));
    add("bn_w", uni(&[8], 0.5, 1.5, rng));
    add("bn_b", rnd(&[8], rng));
    add("dw", Tensor::kaiming_normal(&[8, 1, 3, 3], rng));
    add("pw", Tensor::kaiming_normal(&[16, 8, 1, 1], rng));
    add("dil", Tensor::kaiming_normal(&[16, 1, 3, 3], rng));
    add("s", uni(&[4], 0.3, 1.2, rng));
    add("s0", uni(&[1], 0.5, 1.5, rng));
    add("fc", Tensor::kaiming_uniform(&[10, 16], rng));
    add("fc_b", rnd(&[10], rng));
    Net { store, ids }
}

/// Forward of the small net on `tape`; returns the loss var and the param vars.
fn run_net(tape: &mut Tape, net: &Net, x: Tensor, labels: &[u32]) -> Var {
    let p: Vec<Var> = net
        .ids
        .iter()
        .map(|&id| tape.param(&net.store, id))
        .collect();
    let x = tape.input(x);
    let s = Conv2dSpec::new;
    let h = tape.conv2d(x, p[0], s().padding(1)).unwrap();
    let h = tape
        .batch_norm(h, Some(p[1]), Some(p[2]), None, 0.1, 1e-5)
        .unwrap();
    let h = tape.relu(h).unwrap();
    let a = tape.conv2d(h, p[3], s().padding(1).groups(8)).unwrap();
    let a = tape.conv2d(a, p[4], s()).unwrap();
    let a = tape.max_pool2d(a, pool_spec(3, 2, 1)).unwrap();
    let b = tape
        .conv2d(a, p[5], s().padding(2).dilation(2).groups(16))
        .unwrap();
    let c = tape.avg_pool2d(a, pool_spec(3, 1, 1)).unwrap();
    let d = tape.relu(b).unwrap();
    let m = tape.mixed(&[a, b, c, d], p[6], p[7]).unwrap();
    let m = tape.batch_norm(m, None, None, None, 0.1, 1e-5).unwrap();
    let gp = tape.global_avg_pool(m).unwrap();
    let logits = tape.linear(gp, p[8], Some(p[9])).unwrap();
    tape.cross_entropy(logits, labels).unwrap()
}

#[test]
fn small_conv_net_backward_and_curvature() {
    let g = gpu!("small_conv_net_backward_and_curvature");
    let mut rng = Rng::new(10);
    let net = small_net(&mut rng);
    let mut gnet = Net {
        store: net.store.clone(),
        ids: net.ids.clone(),
    };
    for &id in &gnet.ids {
        let v = gnet.store.value(id).to_device(g.device()).unwrap();
        *gnet.store.value_mut(id) = v;
    }
    let x = rnd(&[6, 3, 12, 12], &mut rng);
    let labels: Vec<u32> = (0..6).map(|_| rng.below(10) as u32).collect();
    let mut tc = Tape::new();
    let lc = run_net(&mut tc, &net, x.clone(), &labels);
    let mut tg = Tape::new();
    let lg = run_net(&mut tg, &gnet, x.to_device(g.device()).unwrap(), &labels);
    close64(
        "loss",
        tg.value(lg).item().unwrap() as f64,
        tc.value(lc).item().unwrap() as f64,
    );
    let (gc, gg) = (tc.backward(lc).unwrap(), tg.backward(lg).unwrap());
    let (hc, hg) = (
        tc.curvature_backward(lc).unwrap(),
        tg.curvature_backward(lg).unwrap(),
    );
    for &id in &net.ids {
        let name = &net.store.get(id).name;
        same(
            &format!("grad {name}"),
            gg.param(id).unwrap(),
            gc.param(id).unwrap(),
        );
        same(
            &format!("curvature {name}"),
            hg.param(id).unwrap(),
            hc.param(id).unwrap(),
        );
    }
}

#[test]
fn grad_norm_with_one_synchronisation() {
    let g = gpu!("grad_norm_with_one_synchronisation");
    let mut rng = Rng::new(11);
    let mut cs = ParamStore::new();
    for (i, shape) in [vec![3], vec![16, 8, 3, 3], vec![100_003], vec![1]]
        .iter()
        .enumerate()
    {
        let id = cs.add(&format!("p{i}"), "w", rnd(shape, &mut rng)).unwrap();
        cs.get_mut(id).grad = rnd(shape, &mut rng);
    }
    let mut gs = cs.clone();
    for id in gs.ids().collect::<Vec<_>>() {
        let p = gs.get_mut(id);
        p.value = up(g, &p.value);
        p.grad = up(g, &p.grad);
    }
    let (nc, ng) = (
        grad_norm(&cs, &[]).unwrap(),
        grad_norm(&gs, &["w"]).unwrap(),
    );
    close64("grad_norm", ng, nc);
}

/// `count_correct` (one block, tree sum) against the CPU backend: exact counts, ties to the
/// first largest logit, more rows than threads.
#[test]
fn count_correct_on_device() {
    let g = gpu!("count_correct_on_device");
    let mut rng = Rng::new(21);
    for (b, k) in [(1usize, 10usize), (64, 10), (1000, 3), (257, 1)] {
        let mut z = rnd(&[b, k], &mut rng).to_vec();
        for r in (0..b).step_by(3) {
            let m = z[r * k..(r + 1) * k]
                .iter()
                .copied()
                .fold(f32::MIN, f32::max);
            z[(r + 1) * k - 1] = m;
        }
        let z = Tensor::from_vec(z, &[b, k]).unwrap();
        let labels: Vec<u32> = (0..b).map(|_| rng.below(k) as u32).collect();
        let want = cpu().count_correct(&z, &labels).unwrap().to_vec();
        let got = g.count_correct(&up(g, &z), &labels).unwrap().to_vec();
        assert_eq!(got, want, "count_correct {b}x{k}");
    }
}

/// `sum_of_squares` over groups of tensors of varied sizes (one or several reduction blocks,
/// a zero-size tensor, an empty group) against the CPU backend, with one host read and one
/// launch for all groups.
#[test]
fn sum_of_squares_groups() {
    let g = gpu!("sum_of_squares_groups");
    let c = cpu();
    let mut rng = Rng::new(14);
    let shapes = [
        vec![3usize],
        vec![16, 8, 3, 3],
        vec![100_003],
        vec![1],
        vec![4097],
        vec![5, 7],
        vec![2, 0, 3],
    ];
    let ts: Vec<Tensor> = shapes.iter().map(|s| rnd(s, &mut rng)).collect();
    let gts: Vec<Tensor> = ts.iter().map(|t| up(g, t)).collect();
    let layouts: [&[&[usize]]; 4] = [
        &[&[0, 1, 2], &[3, 4]],
        &[&[2], &[0, 5, 6, 1], &[4, 3]],
        &[&[5], &[], &[6, 0]],
        &[&[6]],
    ];
    for layout in layouts {
        let pick = |from: &[Tensor]| -> Vec<Vec<Tensor>> {
            layout
                .iter()
                .map(|grp| grp.iter().map(|&i| from[i].clone()).collect())
                .collect()
        };
        let (cg, gg) = (pick(&ts), pick(&gts));
        let crefs: Vec<Vec<&Tensor>> = cg.iter().map(|v| v.iter().collect()).collect();
        let grefs: Vec<Vec<&Tensor>> = gg.iter().map(|v| v.iter().collect()).collect();
        let cgroups: Vec<&[&Tensor]> = crefs.iter().map(|v| &v[..]).collect();
        let ggroups: Vec<&[&Tensor]> = grefs.iter().map(|v| &v[..]).collect();
        let want = c.sum_of_squares(&cgroups).unwrap();
        let (got, counts) = counters::measure(|| g.sum_of_squares(&ggroups).unwrap());
        assert_eq!(got.len(), layout.len(), "{layout:?}: one sum per group");
        for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
            if b == 0.0 {
                assert_eq!(a, 0.0, "{layout:?}: group {i} (no elements)");
            } else {
                close64(&format!("sum_of_squares {layout:?} group {i}"), a, b);
            }
        }
        // one read for all groups (none on CUDA when there is nothing to reduce)
        let elements = layout
            .iter()
            .flat_map(|grp| grp.iter())
            .any(|&i| ts[i].numel() > 0);
        if elements {
            assert_eq!(counts.host_reads, 1, "{layout:?}: {counts:?}");
            // and one launch for every tensor (reduce_sumsq_multi)
            assert_eq!(counts.launches, 1, "{layout:?}: {counts:?}");
        } else {
            assert!(counts.host_reads <= 1, "{layout:?}: {counts:?}");
        }
    }
}
