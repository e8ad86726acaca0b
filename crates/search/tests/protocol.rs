//! End-to-end search on a tiny supernet with synthetic data: a valid genotype comes out,
//! resume gives exactly the uninterrupted result, a NaN loss stops the run cleanly.

use bayesnas_engine::prelude::*;
use bayesnas_search::protocol::{Batch, DataFeed, SearchSettings, Searcher, SplitKind, CHECKPOINT};
use bayesnas_search::supernet::{Supernet, SupernetConfig};
use bayesnas_search::{derive, DeriveRule, SearchSpace};

/// Class-dependent blobs: learnable, deterministic given (split, epoch seed).
struct Synthetic {
    batch: usize,
    batches: usize,
    poison: bool,
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

fn searcher(rounds: usize) -> Searcher {
    let cfg = SupernetConfig {
        space: SearchSpace::bayesnas(),
        channels: 4,
        cells: 2,
        in_channels: 1,
        image: 8,
        classes: 3,
    };
    let mut store = ParamStore::new();
    let net = Supernet::new(cfg, &mut store, &mut Rng::new(5)).unwrap();
    let settings = SearchSettings {
        rounds,
        curvature_batches: 2,
        seed: 9,
        switches_lr: 0.05,
        ..SearchSettings::default()
    };
    Searcher::new(net, store, settings).unwrap()
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("bayesnas-protocol-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn tiny_search_yields_valid_genotype_and_updates_prior() {
    let mut s = searcher(1);
    let mut data = Synthetic {
        batch: 6,
        batches: 4,
        poison: false,
    };
    let mut updates = 0;
    s.run(&mut data, None, &mut |e| {
        if let bayesnas_search::protocol::Event::Update { .. } = e {
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
    let mut data = Synthetic {
        batch: 6,
        batches: 3,
        poison: false,
    };
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
    let mut good = Synthetic {
        batch: 4,
        batches: 2,
        poison: false,
    };
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
    let cfg = SupernetConfig {
        space: SearchSpace::bayesnas(),
        channels: 6,
        cells: 2,
        in_channels: 1,
        image: 8,
        classes: 3,
    };
    let mut store = ParamStore::new();
    let net = Supernet::new(cfg, &mut store, &mut Rng::new(5)).unwrap();
    let mut other = Searcher::new(net, store, SearchSettings::default()).unwrap();
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
