//! Seeded, disjoint, class-stratified splits of a training set into the three parts the
//! search needs (method note, section 7):
//!
//! * `weight`: trains the network weights with the switches fixed (the authors' 10% part);
//! * `switch`: trains weights and switches and feeds the curvature (the authors' 90% part);
//! * `valid`: held out for validation during search (the authors validated on the test set;
//!   we never touch the test set before the final report).
//!
//! Each class is shuffled on its own and cut in the same proportions, so every part has the
//! class balance of the whole. The same labels, configuration and seed always give the same
//! split, on every machine.

use bayesnas_engine::Rng;

use crate::error::{DataError, Result};

/// Stream of the split's generator (kept apart from the loader's streams).
const SPLIT_STREAM: u64 = 0x5350_4c49_5400_0001;

/// Fractions of a search split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SplitConfig {
    /// Fraction of all examples held out for validation.
    pub valid_fraction: f64,
    /// Fraction of the remaining (non-validation) examples in the weight-training part; the
    /// rest is the switch-training part.
    pub weight_fraction: f64,
}

impl Default for SplitConfig {
    /// 10% validation; of the rest, 10% weight training and 90% switch training (the
    /// authors' 10/90 split of their training data).
    fn default() -> Self {
        SplitConfig {
            valid_fraction: 0.1,
            weight_fraction: 0.1,
        }
    }
}

/// Disjoint index lists (each sorted ascending) into a data set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchSplits {
    pub weight: Vec<usize>,
    pub switch: Vec<usize>,
    pub valid: Vec<usize>,
}

fn check_fraction(name: &str, f: f64) -> Result<()> {
    if f.is_finite() && f > 0.0 && f < 1.0 {
        Ok(())
    } else {
        Err(DataError::Invalid(format!(
            "{name} must be strictly between 0 and 1, got {f}"
        )))
    }
}

impl SearchSplits {
    /// Splits examples with the given labels (classes `0..num_classes`) using `seed`.
    pub fn new(labels: &[u8], num_classes: usize, config: SplitConfig, seed: u64) -> Result<Self> {
        check_fraction("valid fraction", config.valid_fraction)?;
        check_fraction("weight fraction", config.weight_fraction)?;
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
        for (i, &l) in labels.iter().enumerate() {
            match by_class.get_mut(usize::from(l)) {
                Some(v) => v.push(i),
                None => {
                    return Err(DataError::Invalid(format!(
                        "label {l} of example {i} is not below {num_classes} classes"
                    )))
                }
            }
        }
        let mut rng = Rng::new(seed).fork(SPLIT_STREAM);
        let (mut weight, mut switch, mut valid) = (Vec::new(), Vec::new(), Vec::new());
        for class in &mut by_class {
            rng.shuffle(class);
            let m = class.len();
            let n_valid = ((m as f64) * config.valid_fraction).round() as usize;
            let rest = m - n_valid.min(m);
            let n_weight = ((rest as f64) * config.weight_fraction).round() as usize;
            let (v, r) = class.split_at(n_valid.min(m));
            let (w, s) = r.split_at(n_weight.min(rest));
            valid.extend_from_slice(v);
            weight.extend_from_slice(w);
            switch.extend_from_slice(s);
        }
        for (name, part) in [
            ("weight-training", &weight),
            ("switch-training", &switch),
            ("validation", &valid),
        ] {
            if part.is_empty() {
                return Err(DataError::Invalid(format!(
                    "the {name} part of a split of {} examples with {config:?} is empty",
                    labels.len()
                )));
            }
        }
        weight.sort_unstable();
        switch.sort_unstable();
        valid.sort_unstable();
        Ok(SearchSplits {
            weight,
            switch,
            valid,
        })
    }

    /// Splits a data set.
    pub fn of(dataset: &crate::Dataset, config: SplitConfig, seed: u64) -> Result<Self> {
        SearchSplits::new(dataset.labels(), dataset.num_classes(), config, seed)
    }

    /// The weight and switch parts together (sorted): the training part of a final training
    /// run that keeps the same validation part.
    pub fn train(&self) -> Vec<usize> {
        let mut v = [self.weight.as_slice(), self.switch.as_slice()].concat();
        v.sort_unstable();
        v
    }

    /// Total number of examples in the three parts.
    pub fn len(&self) -> usize {
        self.weight.len() + self.switch.len() + self.valid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
