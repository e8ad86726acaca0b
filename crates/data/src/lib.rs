//! # bayesnas-data
//!
//! Data for `bayesnas`: readers for MNIST / Fashion-MNIST (IDX, gzip or raw) and CIFAR-10
//! (binary batches) that validate everything and report typed errors naming the file; the
//! Fashion-MNIST test set compiled in as a default development set; seeded, disjoint,
//! class-stratified search splits; augmentation; and a loader that builds normalised NCHW
//! f32 batches on a background thread.
//!
//! ```
//! use std::sync::Arc;
//! use bayesnas_data::{DataSource, Loader, LoaderConfig, SearchSplits, SplitConfig};
//!
//! let source = DataSource::embedded().unwrap();
//! let splits = SearchSplits::of(&source.train, SplitConfig::default(), 42).unwrap();
//! let augment = source.kind.default_augment();
//! let loader = Loader::new(
//!     Arc::clone(&source.train),
//!     splits.weight.clone(),
//!     LoaderConfig::train(64, augment, 42),
//! )
//! .unwrap();
//! let batch = loader.epoch(0).unwrap().next().unwrap();
//! assert_eq!(batch.images.shape(), &[64, 1, 28, 28]);
//! assert_eq!(batch.labels.len(), 64);
//! ```
//!
//! All randomness comes from the engine's seeded [`bayesnas_engine::Rng`], so splits, epoch
//! orders and augmentations are the same on every machine for the same seed.

pub mod augment;
pub mod cifar;
pub mod dataset;
mod embedded;
pub mod error;
pub mod idx;
pub mod loader;
pub mod split;

pub use augment::{Augment, Transform};
pub use dataset::{DataSource, Dataset, DatasetKind, Normalization, Origin, Part};
pub use error::{DataError, Result};
pub use loader::{Batch, Epoch, Loader, LoaderConfig};
pub use split::{SearchSplits, SplitConfig};
