//! End-to-end search on a tiny supernet with synthetic data: a valid genotype comes out,
//! resume gives exactly the uninterrupted result, a NaN loss stops the run cleanly.

use bayesnas_engine::prelude::*;
use bayesnas_search::perturb::{PerturbBn, PerturbMode, PerturbOptions};
use bayesnas_search::searcher::{
    Batch, CurvatureScale, DataFeed, SearchSettings, Searcher, SplitKind, CHECKPOINT,
};
use bayesnas_search::space::CellType;
use bayesnas_search::supernet::SupernetConfig;
use bayesnas_search::{derive, DeriveRule, SearchSpace};

/// Class-dependent blobs: learnable, deterministic given (split, epoch seed).
#[derive(Clone)]
struct Synthetic {
    batch: usize,
    batches: usize,
    poison: bool,
}

impl Synthetic {
    /// `batches` batches of `batch` images per split, all finite.
    fn clean(batch: usize, batches: usize) -> Synthetic {
        Synthetic {
            batch,
            batches,
            poison: false,
        }
    }
}

impl DataFeed for Synthetic {
    fn epoch(
        &mut self,
        split: SplitKind,
        epoch_seed: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<Batch>> + '_>> {
        let mut rng = Rng::new(epoch_seed ^ (split as u64) << 32);
        let (b, poison) = (self.batch, self.poison);
        Ok(Box::new((0..self.batches).map(move |_| {
            let labels: Vec<u32> = (0..b).map(|_| rng.below(3) as u32).collect();
            let mut x = Tensor::randn(&[b, 1, 8, 8], 0.5, &mut rng).into_vec();
            for (n, &l) in labels.iter().enumerate() {
                for v in &mut x[n * 64 + l as usize * 16..n * 64 + l as usize * 16 + 16] {
                    *v += 1.5;
                }
            }
            if poison {
                x[0] = f32::NAN;
            }
            Ok((Tensor::from_vec(x, &[b, 1, 8, 8])?, labels))
        })))
    }
    fn batches(&self, _split: SplitKind) -> usize {
        self.batches
    }
}

mod common;

/// The tiny supernet of these tests: 2 cells of `channels` channels on 1x8x8 images, 3
/// classes.
fn tiny(channels: usize) -> SupernetConfig {
    SupernetConfig {
        space: SearchSpace::bayesnas(),
        channels,
        cells: 2,
        in_channels: 1,
        image: 8,
        classes: 3,
    }
}

fn searcher(rounds: usize) -> Searcher {
    common::searcher(
        tiny(4),
        SearchSettings {
            rounds,
            curvature_batches: 2,
            seed: 9,
            switches_lr: 0.05,
            ..SearchSettings::default()
        },
    )
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("bayesnas-protocol-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn tiny_search_yields_valid_genotype_and_updates_prior() {
    let mut s = searcher(1);
    let mut data = Synthetic::clean(6, 4);
    let mut updates = 0;
    s.run(&mut data, None, &mut |e| {
        if let bayesnas_search::searcher::Event::Update { .. } = e {
            updates += 1
        }
    })
    .unwrap();
    assert!(s.finished());
    assert_eq!(updates, 1);
    assert_eq!(s.history.len(), 2);
    // the reduction cells' groups were updated with real curvature
    let json = serde_json::to_string(&s.prior).unwrap();
    assert!(s.prior.rounds() == 1, "{json}");
    let d = derive(&s.prior, DeriveRule::Threshold { tau: 0.3 }).unwrap();
    d.genotype.validate().unwrap();
    let back = bayesnas_search::Genotype::from_json(&d.genotype.to_json().unwrap()).unwrap();
    assert_eq!(back, d.genotype);
}

#[test]
fn resume_ends_exactly_like_an_uninterrupted_run() {
    let mut data = Synthetic::clean(6, 3);
    let mut full = searcher(2);
    full.run(&mut data, None, &mut |_| {}).unwrap();

    // interrupted after each possible epoch, then resumed in a fresh searcher
    for stop in 1..3 {
        let dir = tmpdir(&format!("resume{stop}"));
        let mut first = searcher(2);
        first
            .run_epochs(&mut data, Some(&dir), &mut |_| {}, stop)
            .unwrap();
        assert_eq!(first.epochs_done, stop);
        let mut resumed = searcher(2);
        resumed.load_checkpoint(&dir.join(CHECKPOINT)).unwrap();
        assert_eq!(resumed.epochs_done, stop);
        resumed.run(&mut data, Some(&dir), &mut |_| {}).unwrap();
        assert!(
            serde_json::to_string(&resumed.prior).unwrap()
                == serde_json::to_string(&full.prior).unwrap(),
            "prior differs after resuming at epoch {stop}"
        );
        for (id, p) in full.store.iter() {
            assert_eq!(
                p.value.to_vec(),
                resumed.store.value(id).to_vec(),
                "{} after resuming at {stop}",
                p.name
            );
        }
        assert_eq!(
            resumed.history,
            full.history
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    // throughput is a wall-clock measurement
                    r.images_per_s = resumed.history[r.epoch].images_per_s;
                    r
                })
                .collect::<Vec<_>>()
        );
        let a = derive(&full.prior, DeriveRule::Threshold { tau: 0.3 }).unwrap();
        let b = derive(&resumed.prior, DeriveRule::Threshold { tau: 0.3 }).unwrap();
        assert_eq!(a.genotype, b.genotype);
        std::fs::remove_dir_all(dir).ok();
    }
}

#[test]
fn nan_loss_stops_with_clear_error_and_keeps_checkpoint() {
    let dir = tmpdir("nan");
    let mut s = searcher(1);
    let mut good = Synthetic::clean(4, 2);
    // the warm-up epoch completes and is checkpointed
    s.run_epochs(&mut good, Some(&dir), &mut |_| {}, 1).unwrap();
    let before = std::fs::read(dir.join(CHECKPOINT)).unwrap();
    let mut again = searcher(1);
    again.load_checkpoint(&dir.join(CHECKPOINT)).unwrap();
    let mut bad = Synthetic {
        batch: 4,
        batches: 2,
        poison: true,
    };
    let err = again.run(&mut bad, Some(&dir), &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::NonFinite(_)), "{err}");
    assert!(err.to_string().contains("last checkpoint is kept"), "{err}");
    assert_eq!(
        std::fs::read(dir.join(CHECKPOINT)).unwrap(),
        before,
        "checkpoint was overwritten"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn checkpoint_of_another_network_is_rejected() {
    let dir = tmpdir("mismatch");
    let s = searcher(1);
    s.save_checkpoint(&dir).unwrap();
    let mut other = common::searcher(tiny(6), SearchSettings::default());
    let e = other
        .load_checkpoint(&dir.join(CHECKPOINT))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("checkpoint.safetensors") && e.contains("shape"),
        "{e}"
    );
    std::fs::write(dir.join("bad.safetensors"), b"{not safetensors").unwrap();
    assert!(other.load_checkpoint(&dir.join("bad.safetensors")).is_err());
    std::fs::remove_dir_all(dir).ok();
}

fn searcher_with(change: impl FnOnce(&mut SearchSettings)) -> Searcher {
    let mut s = searcher(1);
    change(&mut s.settings);
    s.settings.validate().unwrap();
    s
}

fn values(s: &Searcher) -> Vec<Vec<f32>> {
    s.store.iter().map(|(_, p)| p.value.to_vec()).collect()
}

#[test]
fn perturbation_scores_are_held_out_loss_rises_and_restore_the_switches() {
    let mut s = searcher(1);
    let mut data = Synthetic::clean(6, 2);
    s.run(&mut data, None, &mut |_| {}).unwrap();
    let before = values(&s);
    let mut calls = 0;
    let scores = s
        .perturbation_scores(&mut data, 12, PerturbMode::Remove, &mut |_, _| calls += 1)
        .unwrap();
    assert_eq!(values(&s), before, "switches not restored");
    assert_eq!(scores.images, 12);
    // The held-out images are the whole (2-batch) validation split: the base loss is the one
    // `evaluate` measures.
    let (base, _) = s
        .evaluate(&mut data, SplitKind::Validation, &mut |_| {})
        .unwrap();
    assert!((scores.base_loss - base).abs() < 1e-9 * base.abs().max(1.0));
    let k = s.net.n_ops();
    for ct in CellType::ALL {
        let cells = s.net.cells_of(ct);
        let rows = match ct {
            CellType::Normal => &scores.normal,
            CellType::Reduce => &scores.reduce,
        };
        if cells.is_empty() {
            assert!(rows.is_empty());
            continue;
        }
        assert_eq!(rows.len(), s.net.config.space.edges(ct).len());
        // Independent check of two entries: zero the switch by hand in every cell of the type.
        for (e, op) in [(1, 0), (5, 4)] {
            let saved = values(&s);
            zero_child_switch(&mut s, ct, e, op);
            let (loss, _) = s
                .evaluate(&mut data, SplitKind::Validation, &mut |_| {})
                .unwrap();
            let want = loss - base;
            let got = rows[e][op];
            assert!(
                (got - want).abs() <= 1e-6 * loss.abs().max(1.0),
                "{ct:?} edge {e} op {op}: {got} vs {want}"
            );
            restore(&mut s, saved);
        }
        // Not every op matters equally.
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        assert!(flat.iter().all(|v| v.is_finite()));
        assert!(flat.iter().any(|&v| v != flat[0]));
    }
    assert_eq!(
        calls,
        CellType::ALL
            .iter()
            .filter(|&&ct| !s.net.cells_of(ct).is_empty())
            .map(|&ct| s.net.config.space.edges(ct).len() * k)
            .sum::<usize>()
    );
}

/// The held-out evaluations recompute only what a change of one edge's switches reaches (the
/// cells before the first cell of its type, and that cell's nodes the edge does not feed, are
/// recorded once per batch). Every score must still be the loss of a full pass of the network
/// with the switches set by hand, bit for bit: removal scores with running and with batch
/// statistics, and replacement scores, on a five-cell supernet (N R N R N, so both types have
/// cells before and after their first one).
#[test]
fn reused_cells_give_the_scores_of_full_passes_bit_for_bit() {
    let mut s = common::searcher(
        SupernetConfig {
            cells: 5,
            ..tiny(4)
        },
        SearchSettings {
            rounds: 1,
            curvature_batches: 2,
            seed: 9,
            switches_lr: 0.05,
            ..SearchSettings::default()
        },
    );
    let mut data = Synthetic::clean(6, 2);
    s.run(&mut data, None, &mut |_| {}).unwrap();
    assert_eq!(s.net.cells_of(CellType::Normal), vec![0, 2, 4]);
    let batches: Vec<Batch> = data
        .epoch(SplitKind::Validation, 0)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(batches.iter().map(|(_, l)| l.len()).sum::<usize>(), 12);
    // The reference: the plain forward pass of the whole network on every batch.
    let full = |s: &mut Searcher, bn: PerturbBn| -> f64 {
        let new_tape = match bn {
            PerturbBn::Running => Tape::new_eval,
            PerturbBn::Batch => Tape::new,
        };
        let (net, store) = (&s.net, &mut s.store);
        let mut it = batches.iter().map(|(x, l)| Ok((x.clone(), l.clone())));
        bayesnas_search::retrain::evaluate_on(&mut it, new_tape, &mut |t, x| {
            let xv = t.input(x);
            net.forward(t, store, xv)
        })
        .unwrap()
        .means()
        .0
    };
    let set_edge = |s: &mut Searcher, ct: CellType, e: usize, f: &dyn Fn(&[f32]) -> Vec<f32>| {
        for c in s.net.cells_of(ct) {
            let id = s.net.cells[c].edges[e].s;
            let v = f(&s.store.value(id).to_vec());
            s.store.get_mut(id).value = Tensor::from_vec(v, &[7]).unwrap();
        }
    };
    let mut checked = 0;
    for (mode, bn) in [
        (PerturbMode::Remove, PerturbBn::Running),
        (PerturbMode::Remove, PerturbBn::Batch),
        (PerturbMode::Replace, PerturbBn::Running),
    ] {
        let opts = PerturbOptions {
            images: 12,
            mode,
            bn,
            standard_errors: false,
        };
        let (scores, _) = s
            .perturbation_scores_with(&mut data, opts, None, &mut |_, _| {})
            .unwrap();
        let base = full(&mut s, bn);
        assert_eq!(scores.base_loss.to_bits(), base.to_bits());
        for ct in CellType::ALL {
            let (rows, edges) = match ct {
                CellType::Normal => (&scores.normal, &scores.normal_edges),
                CellType::Reduce => (&scores.reduce, &scores.reduce_edges),
            };
            for (e, row) in rows.iter().enumerate() {
                for (op, &got) in row.iter().enumerate() {
                    let saved = values(&s);
                    match mode {
                        PerturbMode::Remove => zero_child_switch(&mut s, ct, e, op),
                        PerturbMode::Replace => set_edge(&mut s, ct, e, &|v| {
                            let mut only = vec![0.0; v.len()];
                            only[op] = v.iter().sum();
                            only
                        }),
                    }
                    let want = full(&mut s, bn) - base;
                    restore(&mut s, saved);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{mode:?} {bn:?} {ct:?} edge {e} op {op}: {got} vs {want}"
                    );
                    checked += 1;
                }
                if mode == PerturbMode::Replace {
                    let saved = values(&s);
                    for c in s.net.cells_of(ct) {
                        let id = s.net.cells[c].edges[e].s0;
                        s.store.get_mut(id).value = Tensor::from_vec(vec![0.0], &[1]).unwrap();
                    }
                    let want = full(&mut s, bn) - base;
                    restore(&mut s, saved);
                    assert_eq!(
                        edges[e].to_bits(),
                        want.to_bits(),
                        "{ct:?} edge {e} removed"
                    );
                }
            }
        }
    }
    assert_eq!(checked, 3 * 2 * 8 * 7);
}

/// `replace` scores: an op's entry is the held-out loss rise when it alone replaces its
/// edge's mixture (the edge's other child switches 0, its own their sum, in every cell of
/// the type) and an edge's the rise when its parent switches are 0; both checked by hand on
/// two entries; the switches are restored; the relevances rank ops by that loss and carry
/// the edge's removal rise.
#[test]
fn replace_scores_are_losses_of_one_op_per_edge_and_restore_the_switches() {
    let mut s = searcher(2);
    let mut data = Synthetic::clean(6, 2);
    s.run(&mut data, None, &mut |_| {}).unwrap();
    let before = values(&s);
    let mut last = (0, 0);
    let scores = s
        .perturbation_scores(&mut data, 12, PerturbMode::Replace, &mut |d, t| {
            last = (d, t)
        })
        .unwrap();
    assert_eq!(values(&s), before, "switches not restored");
    assert_eq!(last.0, last.1, "progress reaches its total");
    assert_eq!(scores.mode, PerturbMode::Replace);
    let base = scores.base_loss;
    let k = s.net.n_ops();
    let ct = CellType::ALL
        .into_iter()
        .find(|&ct| !s.net.cells_of(ct).is_empty())
        .unwrap();
    let cells = s.net.cells_of(ct);
    let (rows, edges) = match ct {
        CellType::Normal => (&scores.normal, &scores.normal_edges),
        CellType::Reduce => (&scores.reduce, &scores.reduce_edges),
    };
    assert_eq!(edges.len(), s.net.config.space.edges(ct).len());
    let eval = |s: &mut Searcher, data: &mut Synthetic| {
        s.evaluate(data, SplitKind::Validation, &mut |_| {})
            .unwrap()
            .0
    };
    for (e, op) in [(0, 3), (6, 1)] {
        let saved = values(&s);
        for &c in &cells {
            let id = s.net.cells[c].edges[e].s;
            let v = s.store.value(id).to_vec();
            let mut only = vec![0.0f32; k];
            only[op] = v.iter().sum();
            s.store.get_mut(id).value = Tensor::from_vec(only, &[k]).unwrap();
        }
        let want = eval(&mut s, &mut data) - base;
        let got = rows[e][op];
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1.0),
            "edge {e} op {op}: {got} vs {want}"
        );
        restore(&mut s, saved);
        let saved = values(&s);
        for &c in &cells {
            let id = s.net.cells[c].edges[e].s0;
            s.store.get_mut(id).value = Tensor::from_vec(vec![0.0], &[1]).unwrap();
        }
        let want = eval(&mut s, &mut data) - base;
        let got = edges[e];
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1.0),
            "edge {e}: {got} vs {want}"
        );
        restore(&mut s, saved);
    }
    let rel = scores.cell_relevance(&s.prior, ct);
    for (e, row) in rows.iter().enumerate() {
        let g0 = edges[e].max(0.0);
        assert_eq!(rel.gamma0[e], g0);
        let best = row.iter().cloned().fold(f64::INFINITY, f64::min);
        for (op, &l) in row.iter().enumerate() {
            let r = rel.gamma_tilde[e][op];
            assert!(
                r >= 0.0 && r <= g0 + 1e-12,
                "edge {e} op {op}: {r} outside [0, {g0}]"
            );
            if l == best {
                assert_eq!(
                    r, g0,
                    "edge {e}: the best replacement carries the edge's rise"
                );
            }
        }
    }
}

/// Sets child switch `op` of edge `e` to 0 in every cell of type `ct`, by hand.
fn zero_child_switch(s: &mut Searcher, ct: CellType, e: usize, op: usize) {
    for c in s.net.cells_of(ct) {
        let id = s.net.cells[c].edges[e].s;
        let mut v = s.store.value(id).to_vec();
        v[op] = 0.0;
        let shape = s.store.value(id).shape().to_vec();
        s.store.get_mut(id).value = Tensor::from_vec(v, &shape).unwrap();
    }
}

fn restore(s: &mut Searcher, saved: Vec<Vec<f32>>) {
    let ids: Vec<_> = s.store.iter().map(|(i, _)| i).collect();
    for (id, v) in ids.into_iter().zip(saved) {
        let shape = s.store.value(id).shape().to_vec();
        s.store.get_mut(id).value = Tensor::from_vec(v, &shape).unwrap();
    }
}

#[test]
fn warmup_in_steps_repeats_the_weight_split_and_matches_epochs_for_one_pass() {
    let mut data = Synthetic::clean(4, 3);
    let mut steps = 0;
    let mut s = searcher_with(|st| st.warmup_steps = Some(7));
    assert_eq!(s.settings.schedule().len(), 2);
    s.run_epochs(
        &mut data,
        None,
        &mut |e| {
            if let bayesnas_search::searcher::Event::Step { .. } = e {
                steps += 1
            }
        },
        1,
    )
    .unwrap();
    assert_eq!(steps, 7);
    // One pass of steps is exactly one warm-up epoch.
    let mut a = searcher_with(|st| st.warmup_steps = Some(3));
    let mut b = searcher(1);
    a.run(&mut data, None, &mut |_| {}).unwrap();
    b.run(&mut data, None, &mut |_| {}).unwrap();
    assert_eq!(values(&a), values(&b));
    // More steps train more.
    assert_ne!(values(&s), values(&b));
}

#[test]
fn curvature_scale_multiplies_the_curvature_given_to_the_update() {
    let mut data = Synthetic::clean(6, 2);
    let h_of = |s: &Searcher| -> Vec<(f64, f64)> {
        let r = bayesnas_search::RelevanceReport::from_prior(&s.prior);
        [r.normal, r.reduce]
            .into_iter()
            .flat_map(|c| c.groups)
            .flat_map(|g| g.cells)
            .map(|c| (c.h, c.big_h))
            .collect()
    };
    let mut mean = searcher(1);
    mean.run(&mut data, None, &mut |_| {}).unwrap();
    for (scale, factor) in [
        (CurvatureScale::BatchSum, 6.0),
        (CurvatureScale::Dataset, 12.0),
    ] {
        let mut s = searcher_with(|st| st.curvature_scale = scale);
        s.run(&mut data, None, &mut |_| {}).unwrap();
        let (a, b) = (h_of(&mean), h_of(&s));
        assert_eq!(a.len(), b.len());
        assert!(a.iter().any(|&(h, _)| h > 0.0));
        for ((h0, _), (h1, big1)) in a.into_iter().zip(b) {
            assert!(
                (h1 - factor * h0).abs() <= 1e-9 * h1.abs().max(1e-30),
                "{scale:?}: {h1} vs {factor} x {h0}"
            );
            assert!((big1 - h1 / 0.01).abs() <= 1e-9 * big1.abs().max(1e-30));
        }
    }
}

#[test]
fn parameter_free_dropout_is_seeded_and_only_acts_on_switch_epochs() {
    let data = Synthetic::clean(4, 2);
    let run = |p: f32, epochs: usize| {
        let mut s = searcher_with(|st| st.param_free_dropout = p);
        s.run_epochs(&mut data.clone(), None, &mut |_| {}, epochs)
            .unwrap();
        values(&s)
    };
    // warm-up only: no handicap
    assert_eq!(run(0.5, 1), run(0.0, 1));
    // switch epoch: seeded, and it changes the training
    assert_eq!(run(0.5, 2), run(0.5, 2));
    assert_ne!(run(0.5, 2), run(0.0, 2));
}

/// Mean cross-entropy over the validation split with training-mode batch norm (each batch's
/// own statistics), written here independently of the searcher; every value of the store,
/// running statistics included, is restored afterwards.
fn batch_stats_loss(s: &mut Searcher, data: &mut Synthetic) -> f64 {
    let saved = values(s);
    let (mut sum, mut n) = (0.0f64, 0usize);
    let batches: Vec<Batch> = data
        .epoch(SplitKind::Validation, 0)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    for (x, labels) in batches {
        let mut tape = Tape::new();
        let xv = tape.input(x);
        let logits = s.net.forward(&mut tape, &mut s.store, xv).unwrap();
        // cross-entropy by hand from the logits
        let z = tape.value(logits).to_vec();
        let k = z.len() / labels.len();
        for (i, &y) in labels.iter().enumerate() {
            let row = &z[i * k..(i + 1) * k];
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            sum += lse - row[y as usize] as f64;
        }
        n += labels.len();
    }
    restore(s, saved);
    sum / n as f64
}

/// `--perturb-bn batch`: the held-out losses use each batch's statistics (checked against a
/// hand-written training-mode loss on the base and two entries), the running statistics and
/// switches are restored bit for bit, the scores differ from the running-statistics ones,
/// and reuse needs the same statistics.
#[test]
fn batch_statistics_scores_match_a_hand_written_training_mode_loss() {
    let mut s = searcher(1);
    let mut data = Synthetic::clean(6, 2);
    s.run(&mut data, None, &mut |_| {}).unwrap();
    let before = values(&s);
    let opts = PerturbOptions {
        images: 12,
        mode: PerturbMode::Remove,
        bn: PerturbBn::Batch,
        standard_errors: false,
    };
    let (scores, reused) = s
        .perturbation_scores_with(&mut data, opts, None, &mut |_, _| {})
        .unwrap();
    assert!(!reused);
    assert!(
        values(&s) == before,
        "running statistics or switches not restored"
    );
    assert_eq!(scores.bn, PerturbBn::Batch);
    let base = batch_stats_loss(&mut s, &mut data);
    assert!(
        (scores.base_loss - base).abs() <= 1e-6 * base.abs().max(1.0),
        "{} vs {base}",
        scores.base_loss
    );
    let (eval_base, _) = s
        .evaluate(&mut data, SplitKind::Validation, &mut |_| {})
        .unwrap();
    assert!(
        (eval_base - base).abs() > 1e-6,
        "batch statistics change nothing"
    );
    let ct = CellType::ALL
        .into_iter()
        .find(|&ct| !s.net.cells_of(ct).is_empty())
        .unwrap();
    let rows = match ct {
        CellType::Normal => &scores.normal,
        CellType::Reduce => &scores.reduce,
    };
    for (e, op) in [(2, 1), (4, 6)] {
        let saved = values(&s);
        zero_child_switch(&mut s, ct, e, op);
        let want = batch_stats_loss(&mut s, &mut data) - base;
        let got = rows[e][op];
        assert!(
            (got - want).abs() <= 1e-6 * base.abs().max(1.0),
            "edge {e} op {op}: {got} vs {want}"
        );
        restore(&mut s, saved);
    }
    let running = s
        .perturbation_scores(&mut data, 12, PerturbMode::Remove, &mut |_, _| {})
        .unwrap();
    let running_rows = match ct {
        CellType::Normal => &running.normal,
        CellType::Reduce => &running.reduce,
    };
    assert_ne!(running_rows, rows);
    // Reuse: the same statistics reuse, the other statistics measure again.
    let (again, reused) = s
        .perturbation_scores_with(&mut data, opts, Some(&scores), &mut |_, _| {})
        .unwrap();
    assert!(reused);
    assert_eq!(again, scores);
    let (other, reused) = s
        .perturbation_scores_with(
            &mut data,
            PerturbOptions {
                bn: PerturbBn::Running,
                ..opts
            },
            Some(&scores),
            &mut |_, _| {},
        )
        .unwrap();
    assert!(!reused);
    assert_eq!(other, running);
}

/// A trained tiny searcher, its data and the options of removal scores with standard errors
/// on its 12 held-out images.
fn trained_with_standard_errors() -> (Searcher, Synthetic, PerturbOptions) {
    let mut s = searcher(1);
    let mut data = Synthetic::clean(6, 2);
    s.run(&mut data, None, &mut |_| {}).unwrap();
    let opts = PerturbOptions {
        images: 12,
        mode: PerturbMode::Remove,
        bn: PerturbBn::Running,
        standard_errors: true,
    };
    (s, data, opts)
}

/// The standard errors of the removal scores, checked against per-image losses computed by
/// hand: each held-out image alone through the evaluation-mode network with one child switch
/// zeroed, its loss by the tape's cross-entropy, the standard error of the paired differences
/// in f64. Their means are the rises.
#[test]
fn removal_standard_errors_match_per_image_losses_computed_by_hand() {
    let (mut s, mut data, opts) = trained_with_standard_errors();
    let (scores, _) = s
        .perturbation_scores_with(&mut data, opts, None, &mut |_, _| {})
        .unwrap();
    assert!(scores.has_standard_errors());
    let images: Vec<(Tensor, u32)> = data
        .epoch(SplitKind::Validation, 0)
        .unwrap()
        .flat_map(|b| {
            let (x, labels) = b.unwrap();
            let per = x.numel() / labels.len();
            let v = x.to_vec();
            labels
                .iter()
                .enumerate()
                .map(|(i, &l)| {
                    let xi = Tensor::from_vec(v[i * per..(i + 1) * per].to_vec(), &[1, 1, 8, 8]);
                    (xi.unwrap(), l)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(images.len(), 12);
    let per_image = |s: &mut Searcher| -> Vec<f64> {
        images
            .iter()
            .map(|(x, l)| {
                let mut t = Tape::new_eval();
                let xv = t.input(x.clone());
                let logits = s.net.forward(&mut t, &mut s.store, xv).unwrap();
                let loss = t.cross_entropy(logits, &[*l]).unwrap();
                t.value(loss).item().unwrap() as f64
            })
            .collect()
    };
    let base: f64 = per_image(&mut s).iter().sum::<f64>() / 12.0;
    assert!((base - scores.base_loss).abs() < 1e-5 * base.max(1.0));
    let mut checked = 0;
    for ct in CellType::ALL {
        if s.net.cells_of(ct).is_empty() {
            continue;
        }
        let (rows, se) = match ct {
            CellType::Normal => (&scores.normal, &scores.normal_se),
            CellType::Reduce => (&scores.reduce, &scores.reduce_se),
        };
        let e = 2;
        let (a, b) = (1, 4);
        let mut losses = Vec::new();
        for op in [a, b] {
            let saved = values(&s);
            zero_child_switch(&mut s, ct, e, op);
            losses.push(per_image(&mut s));
            restore(&mut s, saved);
        }
        for (op, l) in [a, b].into_iter().zip(&losses) {
            let rise = l.iter().sum::<f64>() / 12.0 - base;
            assert!(
                (rise - rows[e][op]).abs() < 1e-5,
                "{ct:?} op {op}: {rise} vs {}",
                rows[e][op]
            );
        }
        let d: Vec<f64> = losses[0]
            .iter()
            .zip(&losses[1])
            .map(|(x, y)| x - y)
            .collect();
        let mean = d.iter().sum::<f64>() / 12.0;
        let sd = (d.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 11.0).sqrt();
        let want = sd / 12f64.sqrt();
        assert!(want > 1e-6, "the two removals should differ per image");
        for got in [se[e][a][b], se[e][b][a]] {
            assert!(
                (got - want).abs() <= 1e-4 * want,
                "{ct:?} se: {got} vs {want}"
            );
        }
        assert_eq!(se[e][a][a], 0.0);
        checked += 1;
    }
    assert!(checked > 0);
    // Reuse needs the standard errors when they are asked for.
    let mut old = scores.clone();
    old.normal_se.clear();
    old.reduce_se.clear();
    let (_, reused) = s
        .perturbation_scores_with(&mut data, opts, Some(&old), &mut |_, _| {})
        .unwrap();
    assert!(!reused, "a file without standard errors was reused");
    let (_, reused) = s
        .perturbation_scores_with(&mut data, opts, Some(&scores), &mut |_, _| {})
        .unwrap();
    assert!(reused);
}

/// `cheaper_within` on planted rises, standard errors and costs (op order: sep_conv_3x3,
/// sep_conv_5x5, dil_conv_3x3, dil_conv_5x5, max_pool, avg_pool, skip_connect).
#[test]
fn cheaper_ops_take_the_rank_of_costlier_ops_they_cannot_be_told_from() {
    let (mut s, mut data, opts) = trained_with_standard_errors();
    let (mut scores, _) = s
        .perturbation_scores_with(&mut data, opts, None, &mut |_, _| {})
        .unwrap();
    let ct = CellType::ALL
        .into_iter()
        .find(|&ct| !s.net.cells_of(ct).is_empty())
        .unwrap();
    let costs = s.op_costs(ct);
    // The supernet's own parameter counts order the ops as expected.
    for c in &costs {
        assert!(c[0] > 0 && c[1] > c[0] && c[3] > c[2] && c[2] > 0, "{c:?}");
        assert!(c[4] == 0 && c[5] == 0, "{c:?}");
    }
    let n_edges = s.net.config.space.edges(ct).len();
    let (rows, se) = match ct {
        CellType::Normal => (&mut scores.normal, &mut scores.normal_se),
        CellType::Reduce => (&mut scores.reduce, &mut scores.reduce_se),
    };
    // Edge 0: sep5 best (0.10); sep3 (0.095) within 2 se of it; dil3 (0.092) not within 2 se
    // of sep5 but within 2 se of sep3; max (0.05) far below.
    // Standard errors: 0.001 between any two ops (0 on the diagonal) unless set.
    let planted = |pairs: &[(usize, usize, f64)]| {
        let mut m = vec![vec![0.001; 7]; 7];
        for (i, row) in m.iter_mut().enumerate() {
            row[i] = 0.0;
        }
        for &(a, b, v) in pairs {
            (m[a][b], m[b][a]) = (v, v);
        }
        m
    };
    rows[0] = vec![0.095, 0.10, 0.092, 0.03, 0.05, 0.01, 0.02];
    // sep5 - sep3 = 0.005 <= 2 * 0.003; sep5 - dil3 = 0.008 > 2 * 0.002;
    // sep3 - dil3 = 0.003 <= 2 * 0.002.
    se[0] = planted(&[(1, 0, 0.003), (1, 2, 0.002), (0, 2, 0.002)]);
    // Edge 1: a max pool within 2 se of the best op (dil5) wins on cost; the best
    // parametric op stays dil5, since dil3 (cheaper) is not within 2 se of it.
    rows[1] = vec![0.02, 0.03, 0.06, 0.07, 0.068, 0.04, 0.01];
    // dil5 - max = 0.002 <= 0.004; dil5 - dil3 = 0.01 > 0.008.
    se[1] = planted(&[(3, 4, 0.002), (3, 2, 0.004)]);
    let rel = scores.cheaper_within(&s.prior, ct, 2.0, &costs).unwrap();
    let g = &rel.gamma_tilde;
    // Edge 0: sep3 inherits sep5's rise and ranks first (cheaper); dil3 inherits sep3's.
    assert_eq!(rel.best_op(0), 0);
    assert!((g[0][0] - 0.10).abs() < 1e-9 && g[0][1] < g[0][0] && (g[0][1] - 0.10).abs() < 1e-9);
    assert!((g[0][2] - 0.095).abs() < 1e-9);
    assert_eq!((g[0][3], g[0][4]), (0.03, 0.05));
    assert_eq!(rel.gamma0[0], 0.10);
    // Edge 1: the max pool takes dil5's place; dil5 stays the best parametric op.
    assert_eq!(rel.best_op(1), 4);
    assert!(g[1][3] > g[1][2] && g[1][3] > g[1][0] && g[1][3] > g[1][1]);
    // z = 0: the plain ranking on both edges.
    let plain = scores.cheaper_within(&s.prior, ct, 0.0, &costs).unwrap();
    assert_eq!((plain.best_op(0), plain.best_op(1)), (1, 3));
    for e in 2..n_edges {
        let want = scores.cell_relevance(&s.prior, ct).best_op(e);
        assert_eq!(plain.best_op(e), want, "edge {e}");
    }
    // Errors: no standard errors, a negative width, replace scores.
    let mut bare = scores.clone();
    bare.normal_se.clear();
    bare.reduce_se.clear();
    assert!(bare.cheaper_within(&s.prior, ct, 2.0, &costs).is_err());
    assert!(scores.cheaper_within(&s.prior, ct, -1.0, &costs).is_err());
    let mut replace = scores.clone();
    replace.mode = PerturbMode::Replace;
    assert!(replace.cheaper_within(&s.prior, ct, 2.0, &costs).is_err());
}
