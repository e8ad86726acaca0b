//! The engine paths built on the multi-tensor backend methods, on the CPU backend, against
//! naive loops written here, on random never-zero values: `ParamStore::set_grads` (the
//! backward pass's gradients moved in, no zeroing pass), `accumulate_grads` and
//! `accumulate_curvature` (one `axpy_multi` per device), `Sgd::step` (one
//! `sgd_momentum_multi` per group), and the operand checks of `axpy_multi`,
//! `sgd_momentum_multi`, `batch_norm_running_update` and `batch_norm_eval_constants` (an
//! `Err` that names the op, never a panic, and nothing written).
//!
//! Every comparison is bit for bit: the naive loops do the backend's f32 operations in the
//! backend's order.

use bayesnas_engine::device::SgdStep;
use bayesnas_engine::prelude::*;
use bayesnas_engine::Backend;

mod common;

fn cpu() -> &'static dyn Backend {
    Device::Cpu.backend().unwrap()
}

/// Random normal values, none of them zero.
fn rv(n: usize, rng: &mut Rng) -> Vec<f32> {
    common::randn(n, rng).iter().map(|&x| x as f32).collect()
}

fn rnd(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::from_vec(rv(shape.iter().product(), rng), shape).unwrap()
}

#[track_caller]
fn same_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: element {i} of {}: got {}, want {}",
            got.len(),
            got[i],
            want[i]
        );
    }
}

/// An `Err` whose message names `op` (and not a panic: the caller got here).
#[track_caller]
fn err_names<T: std::fmt::Debug>(what: &str, r: Result<T>, op: &str) {
    match r {
        Ok(v) => panic!("{what}: expected an error naming {op:?}, got Ok({v:?})"),
        Err(e) => assert!(
            e.to_string().contains(op),
            "{what}: the error {e:?} does not name {op:?}"
        ),
    }
}

/// The parameters of the tests: `(name, group, shape)`; group `""` is a buffer.
const PARAMS: &[(&str, &str, &[usize])] = &[
    ("a", "weights", &[3, 4]),
    ("b", "weights", &[1]),
    ("c", "switches", &[4097]),
    ("d", "frozen", &[7]),         // a group the optimiser has no settings for
    ("e", "weights", &[5]),        // trainable, never in the loss
    ("running_mean", "", &[6]),    // a buffer
    ("z", "switches", &[0]),       // empty, never in the loss
    ("f", "switches", &[10, 100]), // trainable, in the loss
];

/// The parameters that take part in the loss.
const IN_LOSS: &[&str] = &["a", "b", "c", "d", "f"];

/// A store with `PARAMS` (random values) and random grad, curvature and momentum slots.
fn store(rng: &mut Rng) -> ParamStore {
    let mut s = ParamStore::new();
    for &(name, group, shape) in PARAMS {
        let v = rnd(shape, rng);
        let id = if group.is_empty() {
            s.add_buffer(name, v).unwrap()
        } else {
            s.add(name, group, v).unwrap()
        };
        let p = s.get_mut(id);
        p.grad = rnd(shape, rng);
        p.curvature = rnd(shape, rng);
        p.momentum = rnd(shape, rng);
    }
    s
}

/// The gradients (or with `curvature`, the curvatures) of `sum_p 0.5 sum(wt_p (p -
/// t_p)^2)` over the parameters `IN_LOSS` of `s`, with targets and weights drawn from `seed`.
fn passes(s: &ParamStore, seed: u64, curvature: bool) -> Gradients {
    let mut rng = Rng::new(seed);
    let mut tape = Tape::new();
    let mut losses = Vec::new();
    for &name in IN_LOSS {
        let id = s.find(name).unwrap();
        let shape = s.value(id).shape().to_vec();
        let x = tape.param(s, id);
        let target = rnd(&shape, &mut rng);
        let n: usize = shape.iter().product();
        let wt: Vec<f32> = common::rand_uniform(n, 0.5, 2.0, &mut rng)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let wt = Tensor::from_vec(wt, &shape).unwrap();
        losses.push(tape.half_squared_error(x, &target, Some(&wt)).unwrap());
    }
    let loss = tape.sum(&losses).unwrap();
    if curvature {
        tape.curvature_backward(loss).unwrap()
    } else {
        tape.backward(loss).unwrap()
    }
}

/// The slots of every parameter: (value, grad, curvature, momentum).
fn slots(s: &ParamStore) -> Vec<[Vec<f32>; 4]> {
    s.iter()
        .map(|(_, p)| {
            [
                p.value.to_vec(),
                p.grad.to_vec(),
                p.curvature.to_vec(),
                p.momentum.to_vec(),
            ]
        })
        .collect()
}

const SLOT: [&str; 4] = ["value", "grad", "curvature", "momentum"];

#[track_caller]
fn same_slots(what: &str, got: &[[Vec<f32>; 4]], want: &[[Vec<f32>; 4]]) {
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        for i in 0..4 {
            same_bits(
                &format!("{what}: {} {}", PARAMS[k].0, SLOT[i]),
                &g[i],
                &w[i],
            );
        }
    }
}

#[test]
fn set_grads_equals_zero_grads_then_accumulate_grads() {
    let mut rng = Rng::new(7);
    let base = store(&mut rng);
    let g = passes(&base, 11, false);
    // Every parameter of the loss got a gradient, nothing else did.
    for &(name, _, _) in PARAMS {
        let id = base.find(name).unwrap();
        assert_eq!(g.param(id).is_some(), IN_LOSS.contains(&name), "{name}");
    }
    // Naive reference: a parameter of the loss takes its gradient, a trainable parameter
    // outside it zeros, a buffer keeps its (stale) slot; values, curvatures, momenta stay.
    let mut want = slots(&base);
    for (k, (id, p)) in base.iter().enumerate() {
        if let Some(t) = g.param(id) {
            want[k][1] = t.to_vec();
        } else if p.trainable {
            want[k][1] = vec![0.0; p.value.numel()];
        }
    }
    let mut set = base.clone();
    set.set_grads(g).unwrap();
    same_slots("set_grads", &slots(&set), &want);

    let mut acc = base.clone();
    acc.zero_grads().unwrap();
    acc.accumulate_grads(&passes(&base, 11, false)).unwrap();
    let got = slots(&acc);
    for (k, (_, p)) in base.iter().enumerate() {
        let w = if p.trainable {
            want[k][1].clone()
        } else {
            // zero_grads zeros a buffer's slot too; set_grads leaves it (no optimiser reads
            // it, see ParamStore::set_grads).
            vec![0.0; p.value.numel()]
        };
        same_bits(
            &format!("zero + accumulate: {} grad", PARAMS[k].0),
            &got[k][1],
            &w,
        );
    }
    // The missing trainable parameter really was reset (its stale gradient was random).
    let e = set.find("e").unwrap();
    assert!(base.get(e).grad.to_vec().iter().all(|&v| v != 0.0));
    assert_eq!(set.get(e).grad.shape(), base.value(e).shape());
}

#[test]
fn set_grads_and_accumulate_refuse_a_shape_mismatch() {
    let mut rng = Rng::new(8);
    let base = store(&mut rng);
    // The same parameters, `a` transposed: as many elements, another shape.
    let mut other = ParamStore::new();
    for &(name, group, shape) in PARAMS {
        let shape: Vec<usize> = if name == "a" {
            shape.iter().rev().copied().collect()
        } else {
            shape.to_vec()
        };
        let v = rnd(&shape, &mut rng);
        if group.is_empty() {
            other.add_buffer(name, v).unwrap();
        } else {
            other.add(name, group, v).unwrap();
        }
    }
    let mut s = other.clone();
    err_names(
        "set_grads",
        s.set_grads(passes(&base, 3, false)),
        "set_grads",
    );
    let mut s = other.clone();
    let r = s.set_grads(passes(&base, 3, false));
    assert!(
        r.unwrap_err().to_string().contains(" a "),
        "set_grads: the error names the parameter"
    );
    // accumulate_grads / accumulate_curvature: the axpy_multi check, before anything is
    // written.
    let mut s = other.clone();
    let before = slots(&s);
    err_names(
        "accumulate_grads",
        s.accumulate_grads(&passes(&base, 3, false)),
        "axpy_multi",
    );
    err_names(
        "accumulate_curvature",
        s.accumulate_curvature(&passes(&base, 3, true)),
        "axpy_multi",
    );
    same_slots("after the refused accumulations", &slots(&s), &before);
}

#[test]
fn accumulate_grads_and_curvature_match_naive_sums_and_per_tensor_axpy() {
    let mut rng = Rng::new(9);
    let base = store(&mut rng);
    let (g1, g2) = (passes(&base, 21, false), passes(&base, 22, false));
    let (h1, h2) = (passes(&base, 21, true), passes(&base, 22, true));
    let mut s = base.clone();
    s.accumulate_grads(&g1).unwrap();
    s.accumulate_grads(&g2).unwrap();
    s.accumulate_curvature(&h1).unwrap();
    s.accumulate_curvature(&h2).unwrap();
    // Naive: slot[i] + x[i], once per pass (y += 1 * x), in pass order.
    let mut want = slots(&base);
    for (k, (id, _)) in base.iter().enumerate() {
        for (slot, passes) in [(1, [&g1, &g2]), (2, [&h1, &h2])] {
            for pass in passes {
                if let Some(t) = pass.param(id) {
                    for (y, x) in want[k][slot].iter_mut().zip(t.to_vec()) {
                        *y += x;
                    }
                }
            }
        }
    }
    let got = slots(&s);
    same_slots("accumulate vs naive", &got, &want);
    // The same as one Backend::axpy per tensor.
    for (k, (id, p)) in base.iter().enumerate() {
        let (mut gr, mut cu) = (p.grad.clone(), p.curvature.clone());
        for (pass, is_grad) in [(&g1, true), (&g2, true), (&h1, false), (&h2, false)] {
            if let Some(t) = pass.param(id) {
                let slot = if is_grad { &mut gr } else { &mut cu };
                cpu().axpy(1.0, t, slot).unwrap();
            }
        }
        let name = PARAMS[k].0;
        same_bits(&format!("{name} grad vs axpy"), &got[k][1], &gr.to_vec());
        same_bits(
            &format!("{name} curvature vs axpy"),
            &got[k][2],
            &cu.to_vec(),
        );
    }
    // The curvature pass of a weighted half squared error is its weights: positive.
    let c = base.find("c").unwrap();
    assert!(h1.param(c).unwrap().to_vec().iter().all(|&v| v > 0.0));
    // Not a useless test: the accumulated parameters did change.
    assert_ne!(got[0][1], slots(&base)[0][1]);
}

#[test]
fn sgd_step_matches_per_parameter_sgd_momentum() {
    let mut rng = Rng::new(10);
    let base = store(&mut rng);
    let weights = SgdGroup {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 3e-3,
    };
    let switches = SgdGroup {
        lr: 0.45,
        momentum: 0.3,
        weight_decay: 0.0,
    };
    let opt = Sgd::new()
        .group("weights", weights)
        .group("switches", switches);
    let schedule = [(0.7f32, 0.8f32), (0.5, 1.0)];
    let mut s = base.clone();
    for &(lr_factor, grad_scale) in &schedule {
        opt.step(&mut s, lr_factor, grad_scale).unwrap();
    }
    // Naive: per element, d = scale g + wd w; m = mu m + d; w -= (lr lr_factor) m.
    let mut want = slots(&base);
    // Per parameter: Backend::sgd_momentum.
    let mut per_param = base.clone();
    for (k, (id, p)) in base.iter().enumerate() {
        let settings = match p.group.as_str() {
            "weights" => weights,
            "switches" => switches,
            _ => continue, // no settings (frozen) or a buffer: untouched
        };
        assert!(p.trainable);
        for &(lr_factor, grad_scale) in &schedule {
            let lr = settings.lr * lr_factor;
            let [w, g, _, m] = &mut want[k];
            for ((w, &g), m) in w.iter_mut().zip(g.iter()).zip(m.iter_mut()) {
                let d = grad_scale * g + settings.weight_decay * *w;
                *m = settings.momentum * *m + d;
                *w -= lr * *m;
            }
            let step = SgdStep {
                lr,
                momentum: settings.momentum,
                weight_decay: settings.weight_decay,
                grad_scale,
            };
            let q = per_param.get_mut(id);
            cpu()
                .sgd_momentum(&mut q.value, &q.grad, &mut q.momentum, step)
                .unwrap();
        }
    }
    let got = slots(&s);
    same_slots("Sgd::step vs naive", &got, &want);
    same_slots("Sgd::step vs sgd_momentum", &got, &slots(&per_param));
    // The groups with settings changed; `frozen` and the buffer did not (checked above
    // through `want`, which keeps their slots).
    for name in ["a", "b", "c", "e", "f"] {
        let k = PARAMS.iter().position(|p| p.0 == name).unwrap();
        assert_ne!(got[k][0], slots(&base)[k][0], "{name} was not updated");
    }
    // A gradient of the wrong shape: an error naming the op.
    let mut s = base.clone();
    let a = s.find("a").unwrap();
    s.get_mut(a).grad = rnd(&[4, 3], &mut rng);
    err_names("Sgd::step", opt.step(&mut s, 1.0, 1.0), "sgd_momentum");
}

#[test]
fn multi_tensor_methods_refuse_bad_operands() {
    let mut rng = Rng::new(11);
    let c = cpu();
    let (x3, x4) = (rnd(&[3], &mut rng), rnd(&[4], &mut rng));
    let (mut y3, mut y4) = (rnd(&[3], &mut rng), rnd(&[4], &mut rng));
    let (y3_0, y4_0) = (y3.to_vec(), y4.to_vec());
    // axpy_multi: counts, then shapes (same numel, other shape too).
    err_names(
        "axpy_multi count",
        c.axpy_multi(1.0, &[&x3, &x4], &mut [&mut y3]),
        "axpy_multi",
    );
    err_names(
        "axpy_multi shape",
        c.axpy_multi(1.0, &[&x3, &x3], &mut [&mut y3, &mut y4]),
        "axpy_multi",
    );
    let x22 = rnd(&[2, 2], &mut rng);
    err_names(
        "axpy_multi same numel",
        c.axpy_multi(1.0, &[&x22], &mut [&mut y4]),
        "axpy_multi",
    );
    same_bits("axpy_multi: y3 after the errors", &y3.to_vec(), &y3_0);
    same_bits("axpy_multi: y4 after the errors", &y4.to_vec(), &y4_0);
    // An empty list is fine.
    c.axpy_multi(1.0, &[], &mut []).unwrap();

    // sgd_momentum_multi: counts of gradients and of momenta, then shapes.
    let step = SgdStep {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 1e-3,
        grad_scale: 1.0,
    };
    let (mut w3, mut w4) = (rnd(&[3], &mut rng), rnd(&[4], &mut rng));
    let (mut m3, mut m4) = (rnd(&[3], &mut rng), rnd(&[4], &mut rng));
    let before = [w3.to_vec(), w4.to_vec(), m3.to_vec(), m4.to_vec()];
    err_names(
        "sgd_momentum_multi gradient count",
        c.sgd_momentum_multi(
            &mut [&mut w3, &mut w4],
            &[&x3],
            &mut [&mut m3, &mut m4],
            step,
        ),
        "sgd_momentum_multi",
    );
    err_names(
        "sgd_momentum_multi momentum count",
        c.sgd_momentum_multi(&mut [&mut w3, &mut w4], &[&x3, &x4], &mut [&mut m3], step),
        "sgd_momentum_multi",
    );
    // The second pair is wrong: nothing is written, the first pair included.
    err_names(
        "sgd_momentum_multi gradient shape",
        c.sgd_momentum_multi(
            &mut [&mut w3, &mut w4],
            &[&x3, &x3],
            &mut [&mut m3, &mut m4],
            step,
        ),
        "sgd_momentum",
    );
    err_names(
        "sgd_momentum_multi momentum shape",
        c.sgd_momentum_multi(
            &mut [&mut w3, &mut w4],
            &[&x3, &x4],
            &mut [&mut m3, &mut y3],
            step,
        ),
        "sgd_momentum",
    );
    let after = [w3.to_vec(), w4.to_vec(), m3.to_vec(), m4.to_vec()];
    for (i, (a, b)) in after.iter().zip(&before).enumerate() {
        same_bits(
            &format!("sgd_momentum_multi operand {i} after the errors"),
            a,
            b,
        );
    }
    c.sgd_momentum_multi(&mut [], &[], &mut [], step).unwrap();

    // batch_norm_running_update: four [C] vectors.
    let (mut rm, mut rvar) = (rnd(&[3], &mut rng), rnd(&[3], &mut rng));
    let (rm0, rv0) = (rm.to_vec(), rvar.to_vec());
    let (m3, v3) = (rnd(&[3], &mut rng), rnd(&[3], &mut rng));
    let mut rm13 = rnd(&[1, 3], &mut rng);
    let mut rv13 = rnd(&[1, 3], &mut rng);
    err_names(
        "running update: 2-D running mean",
        c.batch_norm_running_update(&mut rm13, &mut rv13, &m3, &v3, 0.1, 0.1),
        "batch_norm running mean",
    );
    err_names(
        "running update: running var",
        c.batch_norm_running_update(&mut rm, &mut y4, &m3, &v3, 0.1, 0.1),
        "batch_norm running var",
    );
    err_names(
        "running update: batch mean",
        c.batch_norm_running_update(&mut rm, &mut rvar, &x4, &v3, 0.1, 0.1),
        "batch_norm batch mean",
    );
    err_names(
        "running update: batch var",
        c.batch_norm_running_update(&mut rm, &mut rvar, &m3, &x4, 0.1, 0.1),
        "batch_norm batch var",
    );
    same_bits("running mean after the errors", &rm.to_vec(), &rm0);
    same_bits("running var after the errors", &rvar.to_vec(), &rv0);

    // batch_norm_eval_constants: [C] statistics, optional [C] weight and bias.
    let pos = Tensor::from_vec(vec![0.5, 1.5, 2.5], &[3]).unwrap();
    err_names(
        "eval constants: 2-D running mean",
        c.batch_norm_eval_constants(&rm13, &rv13, None, None, 1e-5),
        "batch_norm running mean",
    );
    err_names(
        "eval constants: running var",
        c.batch_norm_eval_constants(&rm, &x4, None, None, 1e-5),
        "batch_norm running var",
    );
    err_names(
        "eval constants: weight",
        c.batch_norm_eval_constants(&rm, &pos, Some(&x4), None, 1e-5),
        "batch_norm weight",
    );
    err_names(
        "eval constants: bias",
        c.batch_norm_eval_constants(&rm, &pos, Some(&x3), Some(&x4), 1e-5),
        "batch_norm bias",
    );
    // And the accepted operands against the naive f64 formulas.
    let (rmv, pv, wv, bv) = (rm.to_vec(), pos.to_vec(), x3.to_vec(), m3.to_vec());
    for (w, b) in [
        (None, None),
        (Some(&x3), Some(&m3)),
        (Some(&x3), None),
        (None, Some(&m3)),
    ] {
        let (slope, shift, invstd) = c.batch_norm_eval_constants(&rm, &pos, w, b, 1e-5).unwrap();
        for ch in 0..3 {
            let is = 1.0 / (pv[ch] as f64 + 1e-5f32 as f64).sqrt();
            let a = is * w.map_or(1.0, |_| wv[ch] as f64);
            let sh = b.map_or(0.0, |_| bv[ch] as f64) - rmv[ch] as f64 * a;
            let what = format!("eval constants weight {} bias {}", w.is_some(), b.is_some());
            assert_eq!(
                invstd.to_vec()[ch].to_bits(),
                (is as f32).to_bits(),
                "{what}"
            );
            assert_eq!(slope.to_vec()[ch].to_bits(), (a as f32).to_bits(), "{what}");
            assert_eq!(
                shift.to_vec()[ch].to_bits(),
                (sh as f32).to_bits(),
                "{what}"
            );
        }
    }
}
