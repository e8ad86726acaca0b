//! Structured compression: groups pushed to zero are pruned and the network shrinks, the
//! pruned network computes what the masked unpruned one computes, and the closed-form
//! update follows the method note.

use bayesnas_engine::prelude::*;
use bayesnas_search::compress::{
    AugmentPolicy, Batches, CompressData, CompressNet, CompressSettings, Compressor, Event,
    Granularity, Model, PenaltyMode,
};

fn images(n: usize, seed: u64) -> (Tensor, Vec<u32>) {
    let mut rng = Rng::new(seed);
    let labels = (0..n).map(|_| rng.below(10) as u32).collect();
    (Tensor::randn(&[n, 1, 28, 28], 1.0, &mut rng), labels)
}

fn logits(net: &CompressNet, store: &ParamStore, x: &Tensor) -> Vec<f32> {
    let mut t = Tape::new_eval();
    let xv = t.input(x.clone());
    let y = net.forward(&mut t, store, xv).unwrap();
    assert_eq!(t.value(y).shape(), &[x.shape()[0], 10]);
    t.value(y).to_vec()
}

/// The largest `|a_i - b_i|`.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max)
}

/// Two steps with the curvature pass on the same 16 images (`seed`) at learning rate 1e-4;
/// the curvature and the weights of layer 1 (fc2) after them.
fn two_curvature_steps(c: &mut Compressor, seed: u64, penalty: bool) -> (Vec<f32>, Vec<f32>) {
    let (x, y) = images(16, seed);
    c.step(x.clone(), &y, 0.0001, penalty, true).unwrap();
    c.step(x, &y, 0.0001, penalty, true).unwrap();
    let id = c.net.layers[1].weight;
    (
        c.store.get(id).curvature.to_vec(),
        c.store.value(id).to_vec(),
    )
}

fn shape(store: &ParamStore, name: &str) -> Vec<usize> {
    store.value(store.find(name).unwrap()).shape().to_vec()
}

/// Small steps and a tiny threshold; no weight decay, lambda 0.01.
fn settings() -> CompressSettings {
    CompressSettings {
        lambda: vec![1e-2],
        threshold: 1e-12,
        warmup_epochs: 1,
        finetune_epochs: 4,
        lr: 0.01,
        finetune_lr: 0.05,
        weight_decay: 0.0,
        finetune_weight_decay: 0.0,
        curvature_batches: 1,
        weight_lambda: Vec::new(),
        ..CompressSettings::for_model(Model::Lenet300100)
    }
}

/// Zeroes group `g` of layer `li` (a filter of a conv layer, a column of a linear layer).
fn zero_group(c: &mut Compressor, li: usize, g: usize) {
    let id = c.net.layers[li].weight;
    let w = c.store.value(id);
    let s = w.shape().to_vec();
    let mut v = w.to_vec();
    if s.len() == 4 {
        let block: usize = s[1..].iter().product();
        v[g * block..(g + 1) * block].fill(0.0);
    } else {
        for o in 0..s[0] {
            v[o * s[1] + g] = 0.0;
        }
    }
    *c.store.value_mut(id) = Tensor::from_vec(v, &s).unwrap();
}

/// One batch of random images leaves some ReLU units silent: their outgoing groups have
/// zero curvature and are (rightly) pruned too. Keep those here so that only the groups
/// pushed to zero go.
fn keep_all_but_zero_groups(c: &mut Compressor) {
    for li in 0..c.gamma.len() {
        let norms = c.group_norms(li);
        for (g, n) in norms.iter().enumerate() {
            if *n > 0.0 {
                c.gamma[li][g] = c.gamma[li][g].max(1.0);
            }
        }
    }
}

#[test]
fn groups_pushed_to_zero_are_pruned_and_the_network_shrinks() {
    // LeNet-5: conv1 filter 3, conv2 filter 7 (and with it fc1's inputs 112..128), fc1
    // input 100, fc2 input 42 (and with it fc1's unit 42).
    let mut c = Compressor::new(Model::Lenet5, settings(), Device::Cpu).unwrap();
    let (x, y) = images(8, 1);
    c.step(x.clone(), &y, 0.01, true, true).unwrap();
    zero_group(&mut c, 0, 3);
    zero_group(&mut c, 1, 7);
    zero_group(&mut c, 2, 100);
    zero_group(&mut c, 3, 42);
    c.update().unwrap();
    for (li, g) in [(0, 3), (1, 7), (2, 100), (3, 42)] {
        assert_eq!(c.gamma[li][g], 0.0, "layer {li} group {g}");
    }
    keep_all_but_zero_groups(&mut c);
    let s = c.prune().unwrap();
    assert_eq!(s.structure, vec![19, 49, 783, 499]);
    assert_eq!(c.net.structure(), vec![19, 49, 783, 499]);
    assert_eq!(shape(&c.store, "conv1.weight"), [19, 1, 5, 5]);
    assert_eq!(shape(&c.store, "conv1.bias"), [19]);
    assert_eq!(shape(&c.store, "conv2.weight"), [49, 19, 5, 5]);
    assert_eq!(shape(&c.store, "fc1.weight"), [499, 783]);
    assert_eq!(shape(&c.store, "fc2.weight"), [10, 499]);
    assert!(!c.net.group_units(0).contains(&3));
    assert!(!c.net.group_units(2).contains(&100));
    assert!(!c
        .net
        .group_units(2)
        .iter()
        .any(|&f| (112..128).contains(&f)));
    assert_eq!(c.gamma[2].len(), 783);
    // the shrunk network still trains
    let before = c.step(x.clone(), &y, 0.01, true, true).unwrap().0;
    for _ in 0..5 {
        c.step(x.clone(), &y, 0.01, false, false).unwrap();
    }
    let after = c.step(x, &y, 0.01, false, false).unwrap().0;
    assert!(after < before, "{before} -> {after}");

    // LeNet-300-100: input pixels 0..5 and fc3 input 9 (with fc2's unit 9).
    let mut c = Compressor::new(Model::Lenet300100, settings(), Device::Cpu).unwrap();
    let (x, y) = images(8, 2);
    c.step(x, &y, 0.01, true, true).unwrap();
    for g in 0..5 {
        zero_group(&mut c, 0, g);
    }
    zero_group(&mut c, 2, 9);
    c.update().unwrap();
    assert_eq!(c.gamma[2][9], 0.0);
    keep_all_but_zero_groups(&mut c);
    c.prune().unwrap();
    assert_eq!(c.net.structure(), vec![779, 300, 99]);
    assert_eq!(shape(&c.store, "fc1.weight"), [300, 779]);
    assert_eq!(shape(&c.store, "fc2.weight"), [99, 300]);
    assert_eq!(shape(&c.store, "fc2.bias"), [99]);
    assert_eq!(shape(&c.store, "fc3.weight"), [10, 99]);
}

#[test]
fn pruned_network_computes_the_masked_network() {
    for model in Model::ALL {
        let mut store = ParamStore::new();
        let mut net = CompressNet::new(model, &mut store, &mut Rng::new(7)).unwrap();
        let mut rng = Rng::new(9);
        // prune a random third of every layer's groups
        let flags: Vec<Vec<bool>> = net
            .group_counts()
            .iter()
            .map(|&n| (0..n).map(|_| rng.bernoulli(0.33)).collect())
            .collect();
        let plan = net.plan(&flags, &[]).unwrap();
        let (masked_net, mut masked) = (net.clone(), store.clone());
        masked_net.mask(&mut masked, &plan).unwrap();
        net.shrink(&mut store, &plan).unwrap();
        for (a, b) in net.structure().iter().zip(model.original_structure()) {
            assert!(*a < b, "{model}: {:?}", net.structure());
        }
        let (x, _) = images(5, 3);
        let full = logits(&masked_net, &masked, &x);
        let small = logits(&net, &store, &x);
        let diff = max_abs_diff(&full, &small);
        assert!(diff < 1e-4, "{model}: {diff}");
        // same non-zero weights
        assert_eq!(
            masked_net.nonzero_weights(&masked),
            net.nonzero_weights(&store),
            "{model}"
        );
        // the export lists what survived and how to gather the inputs
        let ex = net.export_store(&store).unwrap();
        let idx = ex.find("fc1.input_index").unwrap();
        let gathered = if model == Model::Lenet5 { 2 } else { 0 };
        assert_eq!(ex.value(idx).numel(), net.structure()[gathered]);
    }
}

#[test]
fn closed_form_update_follows_the_method_note() {
    let s = CompressSettings {
        lambda: vec![1e-3],
        penalty: PenaltyMode::Gradient,
        ..settings()
    };
    let mut c = Compressor::new(Model::Lenet300100, s, Device::Cpu).unwrap();
    let (h, w) = two_curvature_steps(&mut c, 5, true);
    assert!(h.iter().all(|&v| v >= 0.0) && h.iter().any(|&v| v > 0.0));
    c.update().unwrap();
    // group 5 of fc2 is column 5 of its [100, 300] weight; gamma was 1
    let (mut sum, mut norm2) = (0.0f64, 0.0f64);
    for o in 0..100 {
        let big_h = h[o * 300 + 5] as f64 / 2.0 / 1e-3;
        sum += big_h / (1.0 + big_h);
        norm2 += (w[o * 300 + 5] as f64).powi(2);
    }
    let omega = sum.sqrt();
    assert!((c.omega[1][5] - omega).abs() <= 1e-9 * omega.max(1.0));
    assert!((c.gamma[1][5] - norm2.sqrt() / omega).abs() <= 1e-9 * c.gamma[1][5]);
    // the penalty uses the new omega
    assert!(c.penalty() > 0.0);
    // no curvature since the update: a second update is refused
    assert!(c.update().is_err());
}

fn weight_settings() -> CompressSettings {
    CompressSettings {
        weight_loops: 1,
        weight_lambda: vec![1e-3],
        ..settings()
    }
}

#[test]
fn weight_phase_update_is_the_closed_form_with_groups_of_one_weight() {
    let s = CompressSettings {
        penalty: PenaltyMode::Gradient,
        ..weight_settings()
    };
    let mut c = Compressor::new(Model::Lenet300100, s, Device::Cpu).unwrap();
    c.begin_weight_phase().unwrap();
    assert!(c.begin_weight_phase().is_err(), "a second begin is refused");
    assert_eq!(c.gamma[1].len(), 100 * 300);
    let (h, w) = two_curvature_steps(&mut c, 6, false);
    c.update().unwrap();
    let mut checked = 0;
    for i in (0..h.len()).step_by(997) {
        let big_h = h[i] as f64 / 2.0 / 1e-3;
        let omega = (big_h / (1.0 + big_h)).sqrt();
        assert!(
            (c.omega[1][i] - omega).abs() <= 1e-9 * omega.max(1e-3),
            "{i}"
        );
        if h[i] > 0.0 {
            let gamma = (w[i] as f64).abs() / omega;
            assert!((c.gamma[1][i] - gamma).abs() <= 1e-9 * gamma, "{i}");
            checked += 1;
        } else {
            assert_eq!(c.gamma[1][i], 0.0);
        }
    }
    assert!(checked > 10, "{checked}");
    // the penalty is sum_i lambda_w omega_i |w_i|
    let want: f64 = (0..c.net.layers.len())
        .map(|li| {
            let v = c.store.value(c.net.layers[li].weight).to_vec();
            v.iter()
                .zip(&c.omega[li])
                .map(|(x, o)| 1e-3 * o * (*x as f64).abs())
                .sum::<f64>()
        })
        .sum();
    assert!(
        (c.penalty() - want).abs() <= 1e-9 * want,
        "{} vs {want}",
        c.penalty()
    );
    assert_eq!(w.len(), 30000);
}

#[test]
fn weight_phase_prunes_single_weights_and_units_left_without_weights() {
    let mut c = Compressor::new(Model::Lenet5, weight_settings(), Device::Cpu).unwrap();
    let (x, y) = images(8, 4);
    c.begin_weight_phase().unwrap();
    c.step(x.clone(), &y, 0.01, false, true).unwrap();
    c.update().unwrap();
    // keep every weight but the chosen ones
    for g in c.gamma.iter_mut() {
        g.iter_mut().for_each(|v| *v = 1.0);
    }
    // single weights: conv1 weight 7, fc1 weight 12345
    c.gamma[0][7] = 0.0;
    c.gamma[2][12345] = 0.0;
    // conv2 reads channel 4 of conv1 nowhere any more: conv1 filter 4 goes with it
    let k = 25;
    for o in 0..50 {
        for i in 0..k {
            c.gamma[1][(o * 20 + 4) * k + i] = 0.0;
        }
    }
    // fc2 column 42 entirely: fc1 unit 42 goes
    for o in 0..10 {
        c.gamma[3][o * 500 + 42] = 0.0;
    }
    let (nz_before, _) = c.net.nonzero_weights(&c.store);
    // logits of the network with exactly these weights zeroed, for comparison
    let mut masked = c.store.clone();
    for (li, idx) in [(0usize, vec![7usize]), (2, vec![12345])]
        .into_iter()
        .chain(std::iter::once((
            1usize,
            (0..50)
                .flat_map(|o| (0..k).map(move |i| (o * 20 + 4) * k + i))
                .collect(),
        )))
        .chain(std::iter::once((
            3usize,
            (0..10).map(|o| o * 500 + 42).collect(),
        )))
    {
        let id = c.net.layers[li].weight;
        let t = masked.value(id);
        let shape = t.shape().to_vec();
        let mut v = t.to_vec();
        for i in idx {
            v[i] = 0.0;
        }
        *masked.value_mut(id) = Tensor::from_vec(v, &shape).unwrap();
    }
    let full = logits(&c.net, &masked, &x);

    let s = c.prune().unwrap();
    assert_eq!(s.structure, vec![19, 50, 800, 499]);
    assert_eq!(shape(&c.store, "conv1.weight"), [19, 1, 5, 5]);
    assert_eq!(shape(&c.store, "conv2.weight"), [50, 19, 5, 5]);
    assert_eq!(shape(&c.store, "fc1.weight"), [499, 800]);
    assert_eq!(shape(&c.store, "fc2.weight"), [10, 499]);
    assert_eq!(s.layers[0].pruned, 1);
    assert_eq!(s.layers[1].pruned, 50 * k);
    assert_eq!(s.layers[2].pruned, 1);
    assert_eq!(s.layers[3].pruned, 10);
    // per-weight state was cut with the network
    assert_eq!(c.gamma[1].len(), 50 * 19 * k);
    assert_eq!(c.omega[2].len(), 499 * 800);
    // the same function as the network with those weights zeroed: conv1 filter 4 is read
    // by nobody, fc1 unit 42 by nobody
    let small = logits(&c.net, &c.store, &x);
    let diff = max_abs_diff(&full, &small);
    assert!(diff < 1e-4, "{diff}");
    let (nz, _) = c.net.nonzero_weights(&c.store);
    // removed: conv1 filter 4 (25), conv2 channel 4 (1250), fc1 row 42 (800) and column
    // 42 of fc2 (10), plus the two single weights
    assert_eq!(nz_before - nz, 25 + 50 * k + 800 + 10 + 2);

    // pruned weights stay at zero while the rest trains
    let zero_at = |c: &Compressor| {
        let v = c.store.value(c.net.layers[2].weight).to_vec();
        // fc1 weight 12345 = row 15, column 345 of [500, 800]; row 15 keeps its position
        v[15 * 800 + 345]
    };
    assert_eq!(zero_at(&c), 0.0);
    let before = c.step(x.clone(), &y, 0.01, false, false).unwrap().0;
    for _ in 0..5 {
        c.step(x.clone(), &y, 0.01, true, true).unwrap();
    }
    let after = c.step(x.clone(), &y, 0.01, false, false).unwrap().0;
    assert!(after < before, "{before} -> {after}");
    assert_eq!(zero_at(&c), 0.0);
    assert_eq!(c.net.nonzero_weights(&c.store).0, nz);
}

#[test]
fn for_model_holds_every_default() {
    for model in Model::ALL {
        let s = CompressSettings::for_model(model);
        s.validate().unwrap();
        let layers = model.original_structure().len();
        assert_eq!(s.lambda.len(), layers, "{model}");
        // the defaults every model shares
        assert_eq!(s.lr, CompressSettings::LR);
        assert_eq!(s.weight_decay, CompressSettings::WEIGHT_DECAY);
        assert_eq!(s.finetune_weight_decay, CompressSettings::WEIGHT_DECAY);
        assert_eq!(s.momentum, CompressSettings::MOMENTUM);
        assert_eq!(s.curvature_batches, CompressSettings::CURVATURE_BATCHES);
        assert_eq!(s.penalty, CompressSettings::PENALTY);
        assert_eq!(s.batch, CompressSettings::BATCH);
        assert_eq!(s.valid_fraction, CompressSettings::VALID_FRACTION);
        assert_eq!(s.augment, AugmentPolicy::Finetune);
        assert_eq!((s.threshold, s.seed, s.max_batches), (1e-6, 0, None));
        // the fine-tune's weight decay follows the loops'
        let w = CompressSettings::for_model_with(model, 0.1, 1e-3);
        assert_eq!(
            (w.lr, w.weight_decay, w.finetune_weight_decay),
            (0.1, 1e-3, 1e-3)
        );
    }
    let (a, b) = (
        CompressSettings::for_model(Model::Lenet300100),
        CompressSettings::for_model(Model::Lenet5),
    );
    assert_eq!(a.lambda, vec![0.185, 0.0075, 0.03]);
    assert_eq!(b.lambda, vec![0.15, 0.01, 0.018, 0.01]);
    assert_eq!((a.warmup_epochs, a.loops, a.epochs_per_loop), (0, 4, 2));
    assert_eq!((b.warmup_epochs, b.loops, b.epochs_per_loop), (1, 16, 1));
    assert_eq!((a.weight_loops, a.weight_lambda.clone()), (0, vec![0.01]));
    assert_eq!((b.weight_loops, b.weight_lambda.clone()), (4, vec![0.003]));
    assert_eq!((a.finetune_epochs, a.finetune_lr), (100, 0.05));
    assert_eq!((b.finetune_epochs, b.finetune_lr), (80, 0.02));
    assert_eq!((a.crop_padding, b.crop_padding), (2, 1));
    // lenet-300-100 fine-tunes from the loops' learning rate, lenet5 from its own
    let lr = |m| CompressSettings::for_model_with(m, 0.1, 5e-4).finetune_lr;
    assert_eq!((lr(Model::Lenet300100), lr(Model::Lenet5)), (0.1, 0.02));
}

/// Random images: `batches` of 8 per training epoch, no validation part.
struct RandomData {
    batches: usize,
    finetune_epochs: Vec<usize>,
}

impl CompressData for RandomData {
    fn train_batches(&self) -> usize {
        self.batches
    }
    fn train(&mut self, epoch: usize, finetune: bool) -> Result<Batches<'_>> {
        if finetune {
            self.finetune_epochs.push(epoch);
        }
        let seed = 100 * epoch as u64;
        Ok(Box::new(
            (0..self.batches).map(move |i| Ok(images(8, seed + i as u64))),
        ))
    }
    fn validation(&mut self) -> Result<Option<Batches<'_>>> {
        Ok(None)
    }
    fn test(&mut self) -> Result<Batches<'_>> {
        Ok(Box::new((0..2).map(|i| Ok(images(16, 1000 + i)))))
    }
}

#[test]
fn run_goes_through_the_schedule_and_reports_it() {
    let s = CompressSettings {
        lambda: vec![1e-3],
        lr: 0.01,
        warmup_epochs: 1,
        loops: 2,
        epochs_per_loop: 1,
        weight_loops: 1,
        weight_lambda: vec![1e-3],
        finetune_epochs: 2,
        curvature_batches: 2,
        ..CompressSettings::for_model(Model::Lenet300100)
    };
    let labels: Vec<String> = s.rounds().iter().map(|r| r.label()).collect();
    assert_eq!(
        labels,
        [
            "warm-up",
            "loop 1",
            "loop 2",
            "weight warm-up",
            "weight loop 1"
        ]
    );
    assert_eq!((s.first_finetune_epoch(), s.total_epochs()), (5, 7));
    let mut c = Compressor::new(Model::Lenet300100, s.clone(), Device::Cpu).unwrap();
    let mut data = RandomData {
        batches: 3,
        finetune_epochs: Vec::new(),
    };
    let mut seen: Vec<String> = Vec::new();
    let outcome = c
        .run(&mut data, &mut |e: Event| -> Result<()> {
            seen.push(match e {
                Event::EpochStart {
                    epoch,
                    epochs,
                    phase,
                    batches,
                } => format!("start {epoch}/{epochs} {phase} {batches}"),
                Event::Step { step, images, .. } => format!("step {step} {images}"),
                Event::TrainingDone => "trained".into(),
                Event::EpochEnd { record, .. } => format!("end {}", record.epoch),
                Event::RoundEnd { label, record, .. } => {
                    format!("round {label} {}", record.index)
                }
            });
            Ok(())
        })
        .unwrap();
    assert_eq!(
        seen[..7],
        [
            "start 0/7 warm-up 3",
            "step 1 8",
            "step 2 8",
            "step 3 8",
            "trained",
            "end 0",
            "round warm-up 0"
        ]
    );
    let rounds: Vec<&String> = seen.iter().filter(|e| e.starts_with("round")).collect();
    assert_eq!(
        rounds,
        [
            "round warm-up 0",
            "round loop 1 1",
            "round loop 2 2",
            "round weight warm-up 0",
            "round weight loop 1 1"
        ]
    );
    assert_eq!(seen.iter().filter(|e| e.starts_with("step")).count(), 21);
    assert_eq!(seen.last().unwrap(), "end 6");
    assert_eq!(data.finetune_epochs, [5, 6]);
    // the outcome
    assert_eq!(outcome.epochs.len(), 7);
    assert_eq!(outcome.epochs[6].phase, "fine-tune");
    assert_eq!(outcome.loops.len(), 5);
    assert!(!outcome.loops[0].penalty && outcome.loops[1].penalty);
    assert_eq!(outcome.loops[4].granularity, Granularity::Weight);
    assert_eq!(outcome.structure, c.net.structure());
    assert_eq!(outcome.nonzero_weights, c.net.nonzero_weights(&c.store).0);
    assert_eq!(outcome.total_weights, 266_200);
    assert!((0.0..=1.0).contains(&outcome.test_accuracy));
    assert_eq!(outcome.test_error(), 100.0 * (1.0 - outcome.test_accuracy));
    // the fine-tune's learning rate is cosine-annealed from finetune_lr
    assert_eq!(outcome.epochs[5].lr, s.finetune_lr);
    assert!(outcome.epochs[6].lr < s.finetune_lr);

    // an observer's error ends the run
    let mut c = Compressor::new(Model::Lenet300100, s, Device::Cpu).unwrap();
    let mut ends = 0;
    let err = c
        .run(&mut data, &mut |e: Event| {
            if let Event::EpochEnd { .. } = e {
                ends += 1;
                return Err(Error::Invalid("stop".into()));
            }
            Ok(())
        })
        .unwrap_err();
    assert_eq!(err, Error::Invalid("stop".into()));
    assert_eq!(ends, 1);
}
