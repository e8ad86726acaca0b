//! Data loading of the training commands: the stratified hold-out splits and the parts of a
//! training run (`train`, `compress`), the batches of a loader epoch as the trainers take them,
//! and the search's [`Feed`] of its three splits.

use std::sync::Arc;

use bayesnas_data::{DataSource, Dataset, Loader, SearchSplits, SplitConfig};
use bayesnas_engine::prelude::*;
use bayesnas_search::retrain::Batch;
use bayesnas_search::searcher::{DataFeed, SplitKind};

use crate::error::CliResult;

/// Splits `pool` (indices into `ds`) class-stratified into (rest, held out `fraction`).
pub fn hold_out(
    ds: &Dataset,
    pool: &[usize],
    fraction: f64,
    seed: u64,
) -> CliResult<(Vec<usize>, Vec<usize>)> {
    let labels: Vec<u8> = pool.iter().map(|&i| ds.label(i)).collect();
    let s = SearchSplits::new(
        &labels,
        ds.num_classes(),
        SplitConfig {
            valid_fraction: fraction,
            weight_fraction: 0.5,
        },
        seed,
    )?;
    let mut rest: Vec<usize> = s.train().iter().map(|&p| pool[p]).collect();
    rest.sort_unstable();
    let held: Vec<usize> = s.valid.iter().map(|&p| pool[p]).collect();
    Ok((rest, held))
}

/// The three parts of a training run: (train, validation, test) loaders' indices and the
/// test data set, plus a description of where the test images come from.
pub struct Parts {
    pub train: Vec<usize>,
    pub valid: Vec<usize>,
    pub test_set: Arc<Dataset>,
    pub test: Vec<usize>,
    pub test_origin: &'static str,
}

/// Training and validation from the training data; the official test set when there is
/// one, else a held-out 10% of the development set.
pub fn split_parts(source: &DataSource, valid_fraction: f64, seed: u64) -> CliResult<Parts> {
    let ds = &source.train;
    let all: Vec<usize> = (0..ds.len()).collect();
    match &source.test {
        Some(test) => {
            let (train, valid) = hold_out(ds, &all, valid_fraction, seed)?;
            Ok(Parts {
                train,
                valid,
                test_set: Arc::clone(test),
                test: (0..test.len()).collect(),
                test_origin: "official test set",
            })
        }
        None => {
            let (rest, test) = hold_out(ds, &all, 0.1, seed ^ 0x7E57)?;
            let (train, valid) = hold_out(ds, &rest, valid_fraction, seed)?;
            Ok(Parts {
                train,
                valid,
                test_set: Arc::clone(ds),
                test,
                test_origin: "held-out 10% of the development set (no test set available)",
            })
        }
    }
}

/// The batches of one loader epoch as the trainers take them.
pub fn batches(
    loader: &Loader,
    epoch: u64,
    cap: Option<usize>,
) -> CliResult<impl Iterator<Item = Result<Batch>>> {
    let n = cap.unwrap_or(usize::MAX);
    Ok(loader
        .epoch(epoch)?
        .take(n)
        .map(|b| Ok((b.images, b.labels))))
}

/// Batches for the search from the three splits, each with its own background loader.
pub struct Feed {
    pub weight: Loader,
    pub switch: Loader,
    pub valid: Loader,
    /// Cap on the batches of every epoch.
    pub max_batches: Option<usize>,
}

impl Feed {
    fn loader(&self, split: SplitKind) -> &Loader {
        match split {
            SplitKind::Weights => &self.weight,
            SplitKind::Switches => &self.switch,
            SplitKind::Validation => &self.valid,
        }
    }
}

impl DataFeed for Feed {
    fn epoch(
        &mut self,
        split: SplitKind,
        epoch_seed: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<Batch>> + '_>> {
        let cap = self.batches(split);
        let epoch = self
            .loader(split)
            .epoch(epoch_seed)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Box::new(epoch.take(cap).map(|b| Ok((b.images, b.labels)))))
    }
    fn batches(&self, split: SplitKind) -> usize {
        let n = self.loader(split).batches_per_epoch();
        self.max_batches.map_or(n, |m| n.min(m))
    }
}
