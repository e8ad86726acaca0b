//! Data loading of the training commands: the stratified hold-out splits and the parts of a
//! training run (`train`, `compress`), the batches of a loader epoch as the trainers take them,
//! the search's [`SearchFeed`] of its three splits and compression's [`CompressFeed`].

use std::sync::Arc;

use bayesnas_data::{
    Augment, DataSource, Dataset, DatasetKind, Loader, LoaderConfig, Normalization, SearchSplits,
    SplitConfig,
};
use bayesnas_engine::prelude::*;
use bayesnas_search::compress::{AugmentPolicy, Batches, CompressData, CompressSettings};
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
pub struct SearchFeed {
    pub weight: Loader,
    pub switch: Loader,
    pub valid: Loader,
    /// Cap on the batches of every epoch.
    pub max_batches: Option<usize>,
}

impl SearchFeed {
    fn loader(&self, split: SplitKind) -> &Loader {
        match split {
            SplitKind::Weights => &self.weight,
            SplitKind::Switches => &self.switch,
            SplitKind::Validation => &self.valid,
        }
    }
}

impl DataFeed for SearchFeed {
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

/// The loaders of a compression run: MNIST-style images as `[0, 1]` pixels.
pub struct CompressFeed {
    /// The loops' training batches.
    loops: Loader,
    /// The fine-tune's training batches.
    finetune: Loader,
    valid: Option<Loader>,
    test: Loader,
    max_batches: Option<usize>,
}

impl CompressFeed {
    /// Loaders over `parts` as `settings` asks (augmentation, batch, cap).
    pub fn new(
        source: &DataSource,
        kind: DatasetKind,
        parts: &Parts,
        settings: &CompressSettings,
        seed: u64,
    ) -> CliResult<CompressFeed> {
        let ds = &source.train;
        let crops = Augment {
            crop_padding: settings.crop_padding,
            ..kind.default_augment()
        };
        let loops_augment = if settings.augment == AugmentPolicy::All {
            crops
        } else {
            Augment::NONE
        };
        let finetune_augment = if settings.augment == AugmentPolicy::None {
            Augment::NONE
        } else {
            crops
        };
        // Pixels scaled to [0, 1] (no mean shift): the blank background is exactly 0, so
        // inputs that never carry ink have zero curvature and their groups go.
        let unit = Normalization {
            mean: vec![0.0],
            std: vec![1.0],
        };
        let cfg = |c: LoaderConfig| LoaderConfig {
            normalization: Some(unit.clone()),
            ..c
        };
        let train_loader = |augment: Augment| {
            Loader::new(
                Arc::clone(ds),
                parts.train.clone(),
                cfg(LoaderConfig::train(
                    settings.batch,
                    augment,
                    seed.wrapping_add(21),
                )),
            )
        };
        let loops = train_loader(loops_augment)?;
        let finetune = train_loader(finetune_augment)?;
        let valid = if parts.valid.is_empty() {
            None
        } else {
            Some(Loader::new(
                Arc::clone(ds),
                parts.valid.clone(),
                cfg(LoaderConfig::eval(1000)),
            )?)
        };
        let test = Loader::new(
            Arc::clone(&parts.test_set),
            parts.test.clone(),
            cfg(LoaderConfig::eval(1000)),
        )?;
        Ok(CompressFeed {
            loops,
            finetune,
            valid,
            test,
            max_batches: settings.max_batches,
        })
    }
}

/// The batches of one loader epoch, at most `cap`.
fn epoch_batches(
    loader: &Loader,
    epoch: u64,
    cap: Option<usize>,
) -> bayesnas_engine::Result<Batches<'_>> {
    let it = batches(loader, epoch, cap).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(Box::new(it))
}

impl CompressData for CompressFeed {
    fn train_batches(&self) -> usize {
        self.loops
            .batches_per_epoch()
            .min(self.max_batches.unwrap_or(usize::MAX))
    }
    fn train(&mut self, epoch: usize, finetune: bool) -> bayesnas_engine::Result<Batches<'_>> {
        let loader = if finetune {
            &self.finetune
        } else {
            &self.loops
        };
        epoch_batches(loader, epoch as u64, self.max_batches)
    }
    fn validation(&mut self) -> bayesnas_engine::Result<Option<Batches<'_>>> {
        self.valid
            .as_ref()
            .map(|l| epoch_batches(l, 0, None))
            .transpose()
    }
    fn test(&mut self) -> bayesnas_engine::Result<Batches<'_>> {
        epoch_batches(&self.test, 0, None)
    }
}
