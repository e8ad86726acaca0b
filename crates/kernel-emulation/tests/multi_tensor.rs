//! The host-emulated multi-tensor kernels (`ew_axpy_multi`, `sgd_momentum_multi`) and
//! batch-norm running-statistics kernels (`bn_running_update`, `bn_eval_constants`) against
//! the engine's CPU backend (`axpy_multi`, `sgd_momentum_multi`, `batch_norm_running_update`,
//! `batch_norm_eval_constants`), on random never-zero values.
//!
//! Tolerance: none, the results must be bit-identical. Each kernel does the CPU backend's
//! operations on the same types in the same order (f32 for the first three, f64 with a
//! correctly rounded `sqrt` then one rounding to f32 for `bn_eval_constants`), and the
//! emulation is compiled with `-ffp-contract=off` (no fused multiply-add on either side).
//!
//! Every case runs under several grids (one block, a few, exactly enough, more than enough,
//! and small blocks) so that the grid-stride loop and the per-element binary search over the
//! tensor offsets cross every tensor boundary, empty tensors included. Each host buffer has a
//! guard element on both sides that must stay untouched (a wrong offset writes into it).

use bayesnas_engine::device::SgdStep;
use bayesnas_engine::{Rng, Tensor};
use bayesnas_kernel_emulation::multi::*;
use bayesnas_kernel_emulation::*;

mod common;
use common::*;

/// The value of the guard elements around every host buffer.
const GUARD: f32 = -4242.4242;

/// A host buffer of `n` values with one guard element on each side.
struct Guarded {
    buf: Vec<f32>,
}

impl Guarded {
    fn new(v: &[f32]) -> Guarded {
        let mut buf = Vec::with_capacity(v.len() + 2);
        buf.push(GUARD);
        buf.extend_from_slice(v);
        buf.push(GUARD);
        Guarded { buf }
    }
    fn ptr(&self) -> *const f32 {
        self.buf[1..].as_ptr()
    }
    fn ptr_mut(&mut self) -> *mut f32 {
        self.buf[1..].as_mut_ptr()
    }
    fn data(&self) -> &[f32] {
        &self.buf[1..self.buf.len() - 1]
    }
    #[track_caller]
    fn check_guards(&self, what: &str) {
        let last = self.buf.len() - 1;
        for i in [0, last] {
            assert_eq!(
                self.buf[i].to_bits(),
                GUARD.to_bits(),
                "{what}: guard {} written ({})",
                if i == 0 { "before" } else { "after" },
                self.buf[i]
            );
        }
    }
}

/// Bit-for-bit equality of `got` (emulated kernel) and `want` (CPU backend).
#[track_caller]
fn same_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: element {i} of {}: got {} ({:#010x}), want {} ({:#010x})",
            got.len(),
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

/// The grids every case runs under for `work` elements (or channels).
fn launches(work: usize) -> Vec<Launch> {
    let need = work.div_ceil(B as usize).max(1) as u32;
    vec![
        Launch::d1(1, B),
        Launch::d1(3, B),
        Launch::d1(need, B),
        Launch::d1(need + 5, B),
        Launch::d1(1, 32),
        Launch::d1(7, 64),
    ]
}

fn describe(l: &Launch) -> String {
    format!("grid {} x block {}", l.gx, l.bx)
}

/// The tensor shapes of the multi-tensor cases: one tensor; one element; sizes 1, 1000 and
/// 4097 with an empty tensor among them; empty tensors first, last and consecutive; many
/// small tensors (several boundaries per block); random sizes; only empty tensors.
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
        vec![vec![0], vec![0, 4]],
    ]
}

/// `offsets[t]`: the first element of tensor `t` in the concatenation; the last entry is
/// the total.
fn offsets(shapes: &[Vec<usize>]) -> Vec<i64> {
    let mut off = vec![0i64];
    for s in shapes {
        off.push(off.last().unwrap() + s.iter().product::<usize>() as i64);
    }
    off
}

fn random_tensors(shapes: &[Vec<usize>], rng: &mut Rng) -> Vec<Vec<f32>> {
    shapes
        .iter()
        .map(|s| rvec(s.iter().product(), rng))
        .collect()
}

fn tensors(vals: &[Vec<f32>], shapes: &[Vec<usize>]) -> Vec<Tensor> {
    vals.iter().zip(shapes).map(|(v, s)| t(v, s)).collect()
}

/// Asserts that the reference changed something (else the comparison proves nothing), unless
/// there is nothing to change.
#[track_caller]
fn changed(what: &str, before: &[Vec<f32>], after: &[Tensor]) {
    let total: usize = before.iter().map(Vec::len).sum();
    if total > 0 {
        assert!(
            before
                .iter()
                .zip(after)
                .any(|(b, a)| b.as_slice() != a.cpu()),
            "{what}: the reference left everything unchanged (useless test)"
        );
    }
}

#[test]
fn ew_axpy_multi_matches_cpu_axpy_multi() {
    let mut rng = Rng::new(0x0a11);
    for shapes in shape_sets(&mut rng) {
        let off = offsets(&shapes);
        let total = *off.last().unwrap() as usize;
        let xs = random_tensors(&shapes, &mut rng);
        let ys = random_tensors(&shapes, &mut rng);
        for alpha in [1.0f32, rng.normal() as f32 * 2.0] {
            let what = format!("axpy_multi sizes {:?} alpha {alpha}", &off);
            let txs = tensors(&xs, &shapes);
            let mut tys = tensors(&ys, &shapes);
            {
                let xr: Vec<&Tensor> = txs.iter().collect();
                let mut yr: Vec<&mut Tensor> = tys.iter_mut().collect();
                cpu().axpy_multi(alpha, &xr, &mut yr).unwrap();
            }
            changed(&what, &ys, &tys);
            for l in launches(total) {
                let what = format!("{what}, {}", describe(&l));
                let gx: Vec<Guarded> = xs.iter().map(|v| Guarded::new(v)).collect();
                let mut gy: Vec<Guarded> = ys.iter().map(|v| Guarded::new(v)).collect();
                let xp: Vec<*const f32> = gx.iter().map(Guarded::ptr).collect();
                let yp: Vec<*mut f32> = gy.iter_mut().map(Guarded::ptr_mut).collect();
                let p = AxpyMultiParams {
                    tensors: shapes.len() as i64,
                    total: total as i64,
                    alpha,
                    _pad: 0,
                };
                unsafe { host_ew_axpy_multi(l, xp.as_ptr(), yp.as_ptr(), off.as_ptr(), p) };
                for (k, (y, want)) in gy.iter().zip(&tys).enumerate() {
                    y.check_guards(&format!("{what}: y{k}"));
                    same_bits(&format!("{what}: y{k}"), y.data(), want.cpu());
                }
                for (k, (x, orig)) in gx.iter().zip(&xs).enumerate() {
                    x.check_guards(&format!("{what}: x{k}"));
                    same_bits(&format!("{what}: x{k} (read only)"), x.data(), orig);
                }
            }
        }
    }
}

#[test]
fn sgd_momentum_multi_matches_cpu_sgd_momentum_multi() {
    let mut rng = Rng::new(0x5d0_0001);
    for shapes in shape_sets(&mut rng) {
        let off = offsets(&shapes);
        let total = *off.last().unwrap() as usize;
        let (w0, g, m0) = (
            random_tensors(&shapes, &mut rng),
            random_tensors(&shapes, &mut rng),
            random_tensors(&shapes, &mut rng),
        );
        // Two steps with different settings (the second one reads the first one's momentum).
        let steps: Vec<SgdStep> = (0..2)
            .map(|_| SgdStep {
                lr: rng.uniform_range(0.01, 0.3) as f32,
                momentum: rng.uniform_range(0.5, 0.99) as f32,
                weight_decay: rng.uniform_range(1e-4, 1e-2) as f32,
                grad_scale: rng.uniform_range(0.2, 1.0) as f32,
            })
            .collect();
        let what = format!("sgd_momentum_multi sizes {off:?}");
        let tg = tensors(&g, &shapes);
        let (mut tw, mut tm) = (tensors(&w0, &shapes), tensors(&m0, &shapes));
        for &step in &steps {
            let mut wr: Vec<&mut Tensor> = tw.iter_mut().collect();
            let gr: Vec<&Tensor> = tg.iter().collect();
            let mut mr: Vec<&mut Tensor> = tm.iter_mut().collect();
            cpu()
                .sgd_momentum_multi(&mut wr, &gr, &mut mr, step)
                .unwrap();
        }
        changed(&format!("{what} w"), &w0, &tw);
        changed(&format!("{what} m"), &m0, &tm);
        for l in launches(total) {
            let what = format!("{what}, {}", describe(&l));
            let mut gw: Vec<Guarded> = w0.iter().map(|v| Guarded::new(v)).collect();
            let gg: Vec<Guarded> = g.iter().map(|v| Guarded::new(v)).collect();
            let mut gm: Vec<Guarded> = m0.iter().map(|v| Guarded::new(v)).collect();
            let wp: Vec<*mut f32> = gw.iter_mut().map(Guarded::ptr_mut).collect();
            let gp: Vec<*const f32> = gg.iter().map(Guarded::ptr).collect();
            let mp: Vec<*mut f32> = gm.iter_mut().map(Guarded::ptr_mut).collect();
            for s in &steps {
                let p = SgdMultiParams {
                    tensors: shapes.len() as i64,
                    total: total as i64,
                    lr: s.lr,
                    momentum: s.momentum,
                    weight_decay: s.weight_decay,
                    grad_scale: s.grad_scale,
                };
                unsafe {
                    host_sgd_momentum_multi(
                        l,
                        wp.as_ptr(),
                        gp.as_ptr(),
                        mp.as_ptr(),
                        off.as_ptr(),
                        p,
                    )
                };
            }
            for k in 0..shapes.len() {
                for (name, buf) in [("w", &gw[k]), ("g", &gg[k]), ("m", &gm[k])] {
                    buf.check_guards(&format!("{what}: {name}{k}"));
                }
                same_bits(&format!("{what}: w{k}"), gw[k].data(), tw[k].cpu());
                same_bits(&format!("{what}: m{k}"), gm[k].data(), tm[k].cpu());
                same_bits(&format!("{what}: g{k} (read only)"), gg[k].data(), &g[k]);
            }
        }
    }
}

#[test]
fn bn_running_update_matches_cpu() {
    let mut rng = Rng::new(0xb4_0001);
    for c in [1usize, 3, 600, 1000] {
        let rm0 = rvec(c, &mut rng);
        let rv0: Vec<f32> = (0..c).map(|_| rng.uniform_range(0.1, 3.0) as f32).collect();
        // Two updates from two batches of m values per channel.
        let batches: Vec<(Vec<f32>, Vec<f32>, f32, f32)> = (0..2)
            .map(|_| {
                let mean = rvec(c, &mut rng);
                let var: Vec<f32> = (0..c)
                    .map(|_| rng.uniform_range(0.05, 4.0) as f32)
                    .collect();
                let momentum = rng.uniform_range(0.01, 0.5) as f32;
                let m = 2 + rng.below(200);
                let var_factor = (momentum as f64 * m as f64 / (m as f64 - 1.0)) as f32;
                (mean, var, momentum, var_factor)
            })
            .collect();
        let what = format!("bn_running_update c{c}");
        let (mut trm, mut trv) = (t(&rm0, &[c]), t(&rv0, &[c]));
        for (mean, var, momentum, var_factor) in &batches {
            cpu()
                .batch_norm_running_update(
                    &mut trm,
                    &mut trv,
                    &t(mean, &[c]),
                    &t(var, &[c]),
                    *momentum,
                    *var_factor,
                )
                .unwrap();
        }
        assert_ne!(trm.cpu(), rm0.as_slice(), "{what}: rm unchanged");
        assert_ne!(trv.cpu(), rv0.as_slice(), "{what}: rv unchanged");
        for l in launches(c) {
            let what = format!("{what}, {}", describe(&l));
            let (mut rm, mut rv) = (Guarded::new(&rm0), Guarded::new(&rv0));
            for (mean, var, momentum, var_factor) in &batches {
                let (gmean, gvar) = (Guarded::new(mean), Guarded::new(var));
                let p = BnRunningParams {
                    c: c as i64,
                    momentum: *momentum,
                    var_factor: *var_factor,
                };
                unsafe {
                    host_bn_running_update(
                        l,
                        rm.ptr_mut(),
                        rv.ptr_mut(),
                        gmean.ptr(),
                        gvar.ptr(),
                        p,
                    )
                };
                same_bits(&format!("{what}: mean (read only)"), gmean.data(), mean);
                same_bits(&format!("{what}: var (read only)"), gvar.data(), var);
            }
            rm.check_guards(&format!("{what}: rm"));
            rv.check_guards(&format!("{what}: rv"));
            same_bits(&format!("{what}: rm"), rm.data(), trm.cpu());
            same_bits(&format!("{what}: rv"), rv.data(), trv.cpu());
        }
    }
}

#[test]
fn bn_eval_constants_matches_cpu_with_and_without_affine() {
    let mut rng = Rng::new(0xb4_0002);
    for c in [1usize, 3, 600, 1000] {
        let rm = rvec(c, &mut rng);
        let rv: Vec<f32> = (0..c)
            .map(|_| rng.uniform_range(1e-3, 5.0) as f32)
            .collect();
        let (w, b) = (rvec(c, &mut rng), rvec(c, &mut rng));
        let (trm, trv, tw, tb) = (t(&rm, &[c]), t(&rv, &[c]), t(&w, &[c]), t(&b, &[c]));
        for eps in [1e-5f32, 1e-3] {
            for (has_w, has_b) in [(true, true), (false, false), (true, false), (false, true)] {
                let what = format!("bn_eval_constants c{c} eps {eps} weight {has_w} bias {has_b}");
                let (ws, wb) = (has_w.then_some(&tw), has_b.then_some(&tb));
                let (slope, shift, invstd) = cpu()
                    .batch_norm_eval_constants(&trm, &trv, ws, wb, eps)
                    .unwrap();
                for (name, v) in [("slope", &slope), ("shift", &shift), ("invstd", &invstd)] {
                    assert_eq!(v.shape(), [c], "{what}: {name} shape");
                    assert!(
                        v.cpu().iter().all(|x| x.is_finite() && *x != 0.0),
                        "{what}: {name} has zeros or non-finite values (useless test)"
                    );
                }
                for l in launches(c) {
                    let what = format!("{what}, {}", describe(&l));
                    let (grm, grv) = (Guarded::new(&rm), Guarded::new(&rv));
                    let (gw, gb) = (Guarded::new(&w), Guarded::new(&b));
                    let nan = vec![f32::NAN; c];
                    let (mut os, mut oh, mut oi) =
                        (Guarded::new(&nan), Guarded::new(&nan), Guarded::new(&nan));
                    let p = BnParams {
                        n: 1,
                        c: c as i64,
                        s: 1,
                        eps,
                        splits: 1,
                        ..Default::default()
                    };
                    unsafe {
                        host_bn_eval_constants(
                            l,
                            grm.ptr(),
                            grv.ptr(),
                            if has_w { gw.ptr() } else { std::ptr::null() },
                            if has_b { gb.ptr() } else { std::ptr::null() },
                            os.ptr_mut(),
                            oh.ptr_mut(),
                            oi.ptr_mut(),
                            p,
                        )
                    };
                    for (name, got, want) in [
                        ("slope", &os, &slope),
                        ("shift", &oh, &shift),
                        ("invstd", &oi, &invstd),
                    ] {
                        got.check_guards(&format!("{what}: {name}"));
                        same_bits(&format!("{what}: {name}"), got.data(), want.cpu());
                    }
                    for (name, g, orig) in [("rm", &grm, &rm), ("rv", &grv, &rv)] {
                        g.check_guards(&format!("{what}: {name}"));
                        same_bits(&format!("{what}: {name} (read only)"), g.data(), orig);
                    }
                }
            }
        }
    }
}

/// The running-statistics update folded into `bn_stats` and `bn_stats_finalize` (non-null
/// `rm`/`rv`): the batch statistics are bit for bit those of the launch without it, and the
/// running statistics are bit for bit the CPU's `batch_norm_running_update` applied to the
/// statistics the kernel wrote; the CPU's fused `batch_norm_train_forward_with` gives the
/// same running statistics as its own separate update.
#[test]
fn bn_stats_fold_the_running_update() {
    let mut rng = Rng::new(0xb4_0003);
    for (n, c, s) in [
        (2usize, 1usize, 5usize),
        (3, 7, 16),
        (4, 40, 9),
        (2, 600, 1),
    ] {
        let x: Vec<f32> = rvec(n * c * s, &mut rng)
            .iter()
            .map(|v| 1.5 + 2.0 * v)
            .collect();
        let rm0 = rvec(c, &mut rng);
        let rv0: Vec<f32> = (0..c).map(|_| rng.uniform_range(0.1, 3.0) as f32).collect();
        let momentum = rng.uniform_range(0.05, 0.9) as f32;
        let var_factor = momentum * (n * s) as f32 / (n * s - 1) as f32;
        let what = format!("bn_stats running n{n} c{c} s{s}");
        let p = BnParams {
            n: n as i64,
            c: c as i64,
            s: s as i64,
            eps: 1e-5,
            splits: 1,
            momentum,
            var_factor,
        };
        // The CPU: the fused forward against the forward then the separate update.
        let tx = t(&x, &[n, c, s]);
        let (mut frm, mut frv) = (t(&rm0, &[c]), t(&rv0, &[c]));
        let running = bayesnas_engine::device::RunningStats {
            mean: &mut frm,
            var: &mut frv,
            momentum,
            var_factor,
        };
        let f = cpu()
            .batch_norm_train_forward_with(&tx, None, None, 1e-5, Some(running))
            .unwrap();
        let (mut srm, mut srv) = (t(&rm0, &[c]), t(&rv0, &[c]));
        cpu()
            .batch_norm_running_update(&mut srm, &mut srv, &f.mean, &f.var, momentum, var_factor)
            .unwrap();
        same_bits(&format!("{what}: CPU fused rm"), frm.cpu(), srm.cpu());
        same_bits(&format!("{what}: CPU fused rv"), frv.cpu(), srv.cpu());
        assert_ne!(frm.cpu(), rm0.as_slice(), "{what}: rm unchanged");
        // The kernels, one block per channel and split.
        let plain = bn_stats(Launch::d1(c as u32, B), &x, c, p);
        for splits in [0usize, 1, 2, n] {
            let (mut rm, mut rv) = (Guarded::new(&rm0), Guarded::new(&rv0));
            let nan = vec![f32::NAN; c];
            let (mut m, mut v, mut is) =
                (Guarded::new(&nan), Guarded::new(&nan), Guarded::new(&nan));
            let how = if splits == 0 {
                unsafe {
                    host_bn_stats(
                        Launch::d1(c as u32, B),
                        x.as_ptr(),
                        m.ptr_mut(),
                        v.ptr_mut(),
                        is.ptr_mut(),
                        rm.ptr_mut(),
                        rv.ptr_mut(),
                        p,
                    )
                };
                "bn_stats".to_string()
            } else {
                let sp = BnParams {
                    splits: splits as i32,
                    ..p
                };
                let mut part = vec![f64::NAN; 2 * c * splits];
                unsafe {
                    host_bn_stats_partial(
                        Launch::d3(c as u32, splits as u32, 1, B),
                        x.as_ptr(),
                        part.as_mut_ptr(),
                        sp,
                    );
                    host_bn_stats_finalize(
                        Launch::d1(3, 64),
                        x.as_ptr(),
                        part.as_ptr(),
                        m.ptr_mut(),
                        v.ptr_mut(),
                        is.ptr_mut(),
                        rm.ptr_mut(),
                        rv.ptr_mut(),
                        sp,
                    )
                };
                format!("bn_stats_finalize, {splits} splits")
            };
            let what = format!("{what}, {how}");
            for (name, g) in [
                ("mean", &m),
                ("var", &v),
                ("invstd", &is),
                ("rm", &rm),
                ("rv", &rv),
            ] {
                g.check_guards(&format!("{what}: {name}"));
            }
            if splits == 0 {
                same_bits(&format!("{what}: mean"), m.data(), &plain.0);
                same_bits(&format!("{what}: var"), v.data(), &plain.1);
                same_bits(&format!("{what}: invstd"), is.data(), &plain.2);
            }
            let (mut wrm, mut wrv) = (t(&rm0, &[c]), t(&rv0, &[c]));
            cpu()
                .batch_norm_running_update(
                    &mut wrm,
                    &mut wrv,
                    &t(m.data(), &[c]),
                    &t(v.data(), &[c]),
                    momentum,
                    var_factor,
                )
                .unwrap();
            same_bits(&format!("{what}: rm"), rm.data(), wrm.cpu());
            same_bits(&format!("{what}: rv"), rv.data(), wrv.cpu());
        }
    }
}

/// `bn_curvature_input` against the CPU's `batch_norm_curvature`, bit for bit, with and
/// without the affine weight, under several grids; and the CPU method against the op's old
/// three calls (`binary(Mul)`, `unary(Square)`, `channel_affine`).
#[test]
fn bn_curvature_input_matches_cpu() {
    use bayesnas_engine::device::{Binary, Unary};
    let mut rng = Rng::new(0xb4_0004);
    for (n, c, s) in [
        (1usize, 1usize, 1usize),
        (2, 5, 49),
        (3, 64, 4),
        (2, 3, 1000),
    ] {
        let hy: Vec<f32> = (0..n * c * s)
            .map(|_| rng.uniform_range(0.01, 2.0) as f32)
            .collect();
        let invstd: Vec<f32> = (0..c).map(|_| rng.uniform_range(0.2, 5.0) as f32).collect();
        let w = rvec(c, &mut rng);
        let (thy, tis, tw) = (t(&hy, &[n, c, s]), t(&invstd, &[c]), t(&w, &[c]));
        for with_w in [false, true] {
            let what = format!("bn_curvature_input n{n} c{c} s{s} weight {with_w}");
            let ws = with_w.then_some(&tw);
            let want = cpu().batch_norm_curvature(&thy, &tis, ws).unwrap();
            let slope = match ws {
                Some(w) => cpu().binary(w, &tis, Binary::Mul).unwrap(),
                None => tis.clone(),
            };
            let old = cpu()
                .channel_affine(&thy, &cpu().unary(&slope, Unary::Square).unwrap(), None)
                .unwrap();
            same_bits(
                &format!("{what}: CPU against the three calls"),
                want.cpu(),
                old.cpu(),
            );
            assert!(
                want.cpu().iter().all(|v| *v > 0.0),
                "{what}: a zero proves nothing"
            );
            let p = BnParams {
                n: n as i64,
                c: c as i64,
                s: s as i64,
                ..Default::default()
            };
            for l in launches(n * c * s) {
                let what = format!("{what}, {}", describe(&l));
                let (ghy, gis, gw) = (Guarded::new(&hy), Guarded::new(&invstd), Guarded::new(&w));
                let mut hx = Guarded::new(&vec![f32::NAN; n * c * s]);
                unsafe {
                    host_bn_curvature_input(
                        l,
                        ghy.ptr(),
                        gis.ptr(),
                        if with_w { gw.ptr() } else { std::ptr::null() },
                        hx.ptr_mut(),
                        p,
                    )
                };
                hx.check_guards(&format!("{what}: hx"));
                same_bits(&format!("{what}: hx"), hx.data(), want.cpu());
            }
        }
    }
}

/// `ew_add_into` (the tape's gradient accumulation) against the CPU's `add_into` and against
/// one CPU `axpy(1.0)` per tensor, bit for bit, for 1 to 8 tensors, under several grids; the
/// added tensors stay untouched.
#[test]
fn ew_add_into_matches_cpu_and_sequential_axpy() {
    use bayesnas_engine::device::ADD_INTO_MAX;
    let mut rng = Rng::new(0xadd0);
    for n in [1usize, 7, 1000, 4097] {
        for k in 1..=ADD_INTO_MAX {
            let y0 = rvec(n, &mut rng);
            let xs: Vec<Vec<f32>> = (0..k).map(|_| rvec(n, &mut rng)).collect();
            let what = format!("ew_add_into n{n} k{k}");
            let txs: Vec<Tensor> = xs.iter().map(|x| t(x, &[n])).collect();
            let refs: Vec<&Tensor> = txs.iter().collect();
            let mut want = t(&y0, &[n]);
            cpu().add_into(&mut want, &refs).unwrap();
            let mut seq = t(&y0, &[n]);
            for x in &txs {
                cpu().axpy(1.0, x, &mut seq).unwrap();
            }
            same_bits(&format!("{what}: CPU against axpy"), want.cpu(), seq.cpu());
            assert_ne!(want.cpu(), y0.as_slice(), "{what}: unchanged");
            for l in launches(n) {
                let what = format!("{what}, {}", describe(&l));
                let mut y = Guarded::new(&y0);
                let gx: Vec<Guarded> = xs.iter().map(|x| Guarded::new(x)).collect();
                let mut p = AddIntoParams {
                    xs: [std::ptr::null(); ADD_INTO_MAX],
                    n: n as i64,
                    k: k as i32,
                    _pad: 0,
                };
                for (slot, g) in p.xs.iter_mut().zip(&gx) {
                    *slot = g.ptr();
                }
                unsafe { host_ew_add_into(l, y.ptr_mut(), p) };
                y.check_guards(&format!("{what}: y"));
                same_bits(&format!("{what}: y"), y.data(), want.cpu());
                for (j, (g, x)) in gx.iter().zip(&xs).enumerate() {
                    g.check_guards(&format!("{what}: x{j}"));
                    same_bits(&format!("{what}: x{j} (read only)"), g.data(), x);
                }
            }
        }
    }
}

/// `reduce_sumsq_multi` (the gradient norms in one launch): every tensor's partials are bit
/// for bit those of `reduce_dot_partial(x, x)` launched alone with the same block count (the
/// CUDA backend's previous path), for tensors of 1 to 300,000 elements (1 to 74 blocks) in
/// one launch; partials outside the table stay untouched.
#[test]
fn reduce_sumsq_multi_matches_per_tensor_reduce_dot_partial() {
    let mut rng = Rng::new(0x5e5e);
    let sizes = [1usize, 7, 4096, 4097, 10_000, 300_000, 33];
    let xs: Vec<Vec<f32>> = sizes.iter().map(|&n| rvec(n, &mut rng)).collect();
    let blocks: Vec<usize> = sizes.iter().map(|&n| n.div_ceil(4096).min(1024)).collect();
    let total: usize = blocks.iter().sum();
    let mut want = Vec::new();
    for (x, &nb) in xs.iter().zip(&blocks) {
        let mut part = vec![f64::NAN; nb];
        let p = ReduceParams {
            n: x.len() as i64,
            blocks: nb as i64,
        };
        unsafe {
            host_reduce_dot_partial(
                Launch::d1(nb as u32, B),
                x.as_ptr(),
                x.as_ptr(),
                part.as_mut_ptr(),
                p,
            )
        };
        want.extend(part);
    }
    let ptrs: Vec<*const f32> = xs.iter().map(|x| x.as_ptr()).collect();
    let mut table = Vec::new();
    let mut off = 0;
    for (x, &nb) in xs.iter().zip(&blocks) {
        table.extend([x.len() as i64, nb as i64, off as i64]);
        off += nb;
    }
    let max_blocks = *blocks.iter().max().unwrap();
    let mut got = vec![f64::NAN; total + 2];
    let p = SumsqMultiParams {
        tensors: xs.len() as i64,
        max_blocks: max_blocks as i64,
    };
    unsafe {
        host_reduce_sumsq_multi(
            Launch::d3(max_blocks as u32, xs.len() as u32, 1, B),
            ptrs.as_ptr(),
            table.as_ptr(),
            got.as_mut_ptr().add(1),
            p,
        )
    };
    assert!(
        got[0].is_nan() && got[total + 1].is_nan(),
        "wrote outside the partials"
    );
    let got = &got[1..=total];
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "partials differ from the per-tensor reduction"
    );
    // And the sums are the squares' sums (f64 reference, loose: a different order).
    for (t, x) in xs.iter().enumerate() {
        let (a, b) = (table[3 * t + 2] as usize, blocks[t]);
        let s: f64 = got[a..a + b].iter().sum();
        let r: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
        assert!((s - r).abs() <= 1e-9 * r, "tensor {t}: {s} vs {r}");
    }
}
