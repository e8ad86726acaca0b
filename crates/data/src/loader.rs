//! Shuffled batching into NCHW f32 tensors on a background thread.
//!
//! A [`Loader`] owns a data set, the indices it draws from (a split part) and its
//! configuration. [`Loader::epoch`] starts a thread that builds the epoch's batches
//! (gather, augment, normalise) ahead of the consumer through a bounded channel of
//! `prefetch` batches, so the trainer does not wait for data.
//!
//! Determinism: the order of an epoch comes from `Rng::new(seed).fork(epoch).fork(0)` and the
//! augmentation of batch `b` from `Rng::new(seed).fork(epoch).fork(b + 1)`; nothing depends
//! on timing, prefetch depth or on how fast the consumer is. [`Loader::batch`] builds any
//! single batch synchronously and gives the same result as the thread.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use bayesnas_engine::{Rng, Tensor};

use crate::augment::{Augment, Transform};
use crate::dataset::{Dataset, Normalization};
use crate::error::{DataError, Result};

/// Largest accepted prefetch depth.
pub const MAX_PREFETCH: usize = 64;

/// How a [`Loader`] batches.
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderConfig {
    /// Examples per batch (the last batch may be smaller unless `drop_last`).
    pub batch_size: usize,
    /// Shuffle each epoch (seeded by `seed` and the epoch number).
    pub shuffle: bool,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
    /// Augmentation (use [`Augment::NONE`] for evaluation).
    pub augment: Augment,
    /// Batches built ahead of the consumer (1..=64).
    pub prefetch: usize,
    /// Seed of the shuffling and augmentation streams.
    pub seed: u64,
    /// Normalisation; `None` uses the data set kind's standard constants.
    pub normalization: Option<Normalization>,
}

impl LoaderConfig {
    /// Training: shuffled, augmented with `augment`, last partial batch dropped.
    pub fn train(batch_size: usize, augment: Augment, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: true,
            drop_last: true,
            augment,
            prefetch: 3,
            seed,
            normalization: None,
        }
    }

    /// Evaluation: in order, not augmented, every example.
    pub fn eval(batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: false,
            drop_last: false,
            augment: Augment::NONE,
            prefetch: 3,
            seed: 0,
            normalization: None,
        }
    }
}

/// One batch.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Position of the batch in its epoch.
    pub index: usize,
    /// Images, `[n, c, h, w]`, normalised (and augmented for training).
    pub images: Tensor,
    /// Class labels, `n`.
    pub labels: Vec<u32>,
    /// Indices of the examples in the data set, `n`.
    pub indices: Vec<usize>,
}

impl Batch {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

struct Shared {
    dataset: Arc<Dataset>,
    indices: Vec<usize>,
    transform: Transform,
    config: LoaderConfig,
}

impl Shared {
    fn epoch_rng(&self, epoch: u64) -> Rng {
        Rng::new(self.config.seed).fork(epoch)
    }

    fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order = self.indices.clone();
        if self.config.shuffle {
            self.epoch_rng(epoch).fork(0).shuffle(&mut order);
        }
        order
    }

    fn num_batches(&self) -> usize {
        let (n, b) = (self.indices.len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    fn build(&self, epoch: u64, index: usize, ids: &[usize]) -> Batch {
        let [c, h, w] = self.dataset.image_shape();
        let per = c * h * w;
        let mut data = vec![0f32; ids.len() * per];
        let augment = self.config.augment.is_active();
        let mut rng = self.epoch_rng(epoch).fork(index as u64 + 1);
        for (dst, &i) in data.chunks_exact_mut(per).zip(ids) {
            let src = self.dataset.image(i);
            if augment {
                self.transform.augment(src, dst, &mut rng);
            } else {
                self.transform.normalize(src, dst);
            }
        }
        let images = Tensor::from_vec(data, &[ids.len(), c, h, w])
            .expect("batch buffer has n*c*h*w elements by construction");
        Batch {
            index,
            images,
            labels: ids
                .iter()
                .map(|&i| u32::from(self.dataset.label(i)))
                .collect(),
            indices: ids.to_vec(),
        }
    }
}

/// Batches a subset of a data set; see the module documentation.
#[derive(Clone)]
pub struct Loader {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("dataset", &self.shared.dataset.name())
            .field("examples", &self.shared.indices.len())
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Loader {
    /// A loader over `indices` of `dataset` (all of them in order: `(0..dataset.len()).collect()`).
    pub fn new(dataset: Arc<Dataset>, indices: Vec<usize>, config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(DataError::Invalid("batch size must be at least 1".into()));
        }
        if config.prefetch == 0 || config.prefetch > MAX_PREFETCH {
            return Err(DataError::Invalid(format!(
                "prefetch must be between 1 and {MAX_PREFETCH}, got {}",
                config.prefetch
            )));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= dataset.len()) {
            return Err(DataError::Invalid(format!(
                "index {bad} is out of range for {} ({} examples)",
                dataset.name(),
                dataset.len()
            )));
        }
        let norm = config
            .normalization
            .clone()
            .unwrap_or_else(|| dataset.kind().normalization());
        let transform = Transform::new(dataset.image_shape(), &norm, config.augment)?;
        Ok(Loader {
            shared: Arc::new(Shared {
                dataset,
                indices,
                transform,
                config,
            }),
        })
    }

    /// A loader over every example of `dataset`.
    pub fn all(dataset: Arc<Dataset>, config: LoaderConfig) -> Result<Self> {
        let indices = (0..dataset.len()).collect();
        Loader::new(dataset, indices, config)
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.shared.config
    }
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.shared.dataset
    }
    /// Number of examples the loader draws from.
    pub fn len(&self) -> usize {
        self.shared.indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.shared.indices.is_empty()
    }
    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.shared.num_batches()
    }
    /// Examples per epoch (after dropping a last partial batch).
    pub fn examples_per_epoch(&self) -> usize {
        if self.shared.config.drop_last {
            self.batches_per_epoch() * self.shared.config.batch_size
        } else {
            self.len()
        }
    }

    /// The order in which epoch `epoch` visits the examples (data set indices).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        self.shared.order(epoch)
    }

    /// Builds batch `index` of epoch `epoch` on the calling thread (the same batch the
    /// background thread yields), or `None` past the end of the epoch.
    pub fn batch(&self, epoch: u64, index: usize) -> Option<Batch> {
        if index >= self.batches_per_epoch() {
            return None;
        }
        let order = self.shared.order(epoch);
        let b = self.shared.config.batch_size;
        let ids = &order[index * b..((index + 1) * b).min(order.len())];
        Some(self.shared.build(epoch, index, ids))
    }

    /// Starts epoch `epoch`: a background thread builds its batches ahead of the consumer.
    /// Dropping the returned iterator early stops the thread.
    pub fn epoch(&self, epoch: u64) -> Result<Epoch> {
        let shared = Arc::clone(&self.shared);
        let total = shared.num_batches();
        let (tx, rx) = sync_channel(shared.config.prefetch);
        let handle = std::thread::Builder::new()
            .name("bayesnas-loader".into())
            .spawn(move || {
                let order = shared.order(epoch);
                let b = shared.config.batch_size;
                for index in 0..total {
                    let ids = &order[index * b..((index + 1) * b).min(order.len())];
                    let batch = shared.build(epoch, index, ids);
                    if tx.send(batch).is_err() {
                        return; // the consumer went away
                    }
                }
            })
            .map_err(|e| DataError::Invalid(format!("cannot start the loader thread: {e}")))?;
        Ok(Epoch {
            rx: Some(rx),
            handle: Some(handle),
            remaining: total,
        })
    }
}

/// The batches of one epoch, built on a background thread; see [`Loader::epoch`].
pub struct Epoch {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
    remaining: usize,
}

impl Iterator for Epoch {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.remaining == 0 {
            return None;
        }
        match self.rx.as_ref()?.recv() {
            Ok(batch) => {
                self.remaining -= 1;
                Some(batch)
            }
            Err(_) => {
                // The thread ended before sending every batch: it panicked. Re-raise here.
                self.remaining = 0;
                if let Some(handle) = self.handle.take() {
                    if let Err(payload) = handle.join() {
                        std::panic::resume_unwind(payload);
                    }
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Epoch {}

impl Drop for Epoch {
    fn drop(&mut self) {
        // Closing the channel first unblocks a thread waiting to send.
        drop(self.rx.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
