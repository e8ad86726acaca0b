//! The networks compression knows, LeNet-300-100 and LeNet-5-Caffe: their names, layers,
//! structures before compression and the published reference results.

use std::fmt;
use std::str::FromStr;

use bayesnas_engine::prelude::*;
use serde::{Deserialize, Serialize};

/// The networks `bayesnas compress` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Model {
    /// LeNet-300-100: fc 784-300-100-10.
    #[serde(rename = "lenet-300-100")]
    Lenet300100,
    /// LeNet-5-Caffe: conv 20, conv 50, fc 500, fc 10.
    #[serde(rename = "lenet5")]
    Lenet5,
}

impl Model {
    /// Every model.
    pub const ALL: [Model; 2] = [Model::Lenet300100, Model::Lenet5];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Model::Lenet300100 => "lenet-300-100",
            Model::Lenet5 => "lenet5",
        }
    }

    /// The structure before compression (what [`CompressNet::structure`] counts).
    ///
    /// [`CompressNet::structure`]: super::CompressNet::structure
    pub fn original_structure(self) -> Vec<usize> {
        match self {
            Model::Lenet300100 => vec![784, 300, 100],
            Model::Lenet5 => vec![20, 50, 800, 500],
        }
    }

    /// Louizos et al. (2017), Bayesian Compression: (method, structure, test error %,
    /// non-zero weights %).
    pub fn reference(self) -> (&'static str, Vec<usize>, f64, f64) {
        match self {
            Model::Lenet300100 => ("BC-GNJ", vec![278, 98, 13], 1.8, 10.8),
            Model::Lenet5 => ("BC-GHS", vec![5, 10, 76, 16], 1.0, 0.6),
        }
    }

    /// The layers of the model: its boundaries (name, units), its layers (name, kind, input
    /// boundary, output boundary) and the flatten between its conv and fully connected
    /// layers, if any.
    pub(super) fn layout(self) -> Layout {
        match self {
            Model::Lenet300100 => Layout {
                boundaries: vec![("input", 784), ("fc1", 300), ("fc2", 100), ("classes", 10)],
                layers: vec![
                    ("fc1", Kind::Fc, 0, 1),
                    ("fc2", Kind::Fc, 1, 2),
                    ("fc3", Kind::Fc, 2, 3),
                ],
                link: None,
            },
            Model::Lenet5 => Layout {
                boundaries: vec![
                    ("input", 1),
                    ("conv1", 20),
                    ("conv2", 50),
                    ("fc1_in", 800),
                    ("fc1", 500),
                    ("classes", 10),
                ],
                layers: vec![
                    ("conv1", Kind::Conv { k: 5 }, 0, 1),
                    ("conv2", Kind::Conv { k: 5 }, 1, 2),
                    ("fc1", Kind::Fc, 3, 4),
                    ("fc2", Kind::Fc, 4, 5),
                ],
                link: Some(Link {
                    channels: 2,
                    features: 3,
                    per: 16,
                }),
            },
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Model {
    type Err = Error;
    fn from_str(s: &str) -> Result<Model> {
        Model::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown model '{s}' (valid: lenet-300-100, lenet5)"
                ))
            })
    }
}

/// `"784-300-100"`.
pub fn structure_string(s: &[usize]) -> String {
    s.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

/// What a layer computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// `k x k` conv, stride 1, no padding, + bias, ReLU, 2x2 max pool.
    Conv { k: usize },
    /// Linear + bias (+ ReLU unless last).
    Fc,
}

/// The flatten between a conv output (channels) and a fully connected input (features
/// `channel * per + pixel`): boundary indices and pixels per channel.
#[derive(Clone, Copy, Debug)]
pub(super) struct Link {
    pub(super) channels: usize,
    pub(super) features: usize,
    pub(super) per: usize,
}

/// The layers of a model (see [`Model::layout`]).
pub(super) struct Layout {
    pub(super) boundaries: Vec<(&'static str, usize)>,
    pub(super) layers: Vec<(&'static str, Kind, usize, usize)>,
    pub(super) link: Option<Link>,
}
