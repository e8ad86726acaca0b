//! BayesNAS on the autograd engine (`bayesnas-engine`): the search space, the supernet and the
//! [`Searcher`](searcher::Searcher) that trains it, the hierarchical prior and its update,
//! deriving, drawing and retraining cells. The supernet, the evaluation network and the
//! compressed networks are built on the engine's tape and train on its CPU or CUDA backend.
//!
//! See the method note (`shared/notes/bayesnas-method.md`) for the method itself.
//!
//! * [`space`]: candidate operations, cell nodes and edges, the `bayesnas` and `darts` spaces
//!   (and the mapping of our `in0`/`in1` to DARTS' input indices).
//! * [`bayes`]: the hierarchical ARD prior (HARD) and its closed-form update on the host (the
//!   CPU reference for the device kernel).
//! * [`derive`](mod@derive): deriving cells from the relevances (threshold rule with repair, DARTS' top-2;
//!   op scope and node repair options).
//! * [`supernet`], [`searcher`]: the supernet and the [`Searcher`](searcher::Searcher) running
//!   the search protocol (warm-up, switch epochs, curvature, update; checkpoints).
//! * [`curvature`]: switch-curvature estimators besides the engine's recursion (MC-Fisher, GGN).
//! * [`perturb`]: perturbation-based selection on the trained supernet.
//! * [`random_cell`]: random cells of a space, the baseline a search must beat.
//! * [`heatmap`]: SVG heat maps of the relevances (edges by operations).
//! * [`genotype`]: derived cells, `genotype.json` and DARTS `Genotype(...)` strings.
//! * [`draw`]: DOT and self-drawn SVG pictures of a cell.
//! * `svg`: the SVG opening, background, title and escaping that [`draw`] and [`heatmap`]
//!   share.
//! * [`relevance`]: the `relevance.json` report.
//! * [`retrain`]: training a derived cell in the evaluation network, Bayesian compression of
//!   LeNet-300-100 / LeNet-5 with the same machinery, and the one evaluation loop
//!   ([`retrain::evaluate`]) that the search and both trainers use.
//!
//! Everything is deterministic and reports bad input through typed errors (collected in
//! [`Error`]).
//!
//! # Example: one update and a derivation
//!
//! ```
//! use bayesnas_search::bayes::{GroupKind, Prior, UpdateConfig};
//! use bayesnas_search::derive::{derive, DeriveRule};
//! use bayesnas_search::relevance::RelevanceReport;
//! use bayesnas_search::{CellType, SearchSpace};
//!
//! let space = SearchSpace::bayesnas();
//! let mut prior = Prior::new(&space)?;
//! // Switch values and curvatures after the switch epoch (8 cells: 6 normal, 2 reduce).
//! let mut normal = prior.stats_template(CellType::Normal, 6);
//! let mut reduce = prior.stats_template(CellType::Reduce, 2);
//! for stats in [&mut normal, &mut reduce] {
//!     for g in 0..stats.n_groups() {
//!         for c in 0..stats.n_cells() {
//!             let s = 0.5 + 0.1 * ((g + c) % 7) as f64;
//!             let h = 1e-3 * (1 + (g * 3 + c) % 5) as f64;
//!             stats.set(GroupKind::from_index(g, space.ops.len()), c, s, h)?;
//!         }
//!     }
//! }
//! prior.update(&normal, &reduce, &UpdateConfig::new(0.005))?;
//! let derived = derive(&prior, DeriveRule::Threshold { tau: 0.8 })?;
//! let json = derived.genotype.to_json()?;
//! assert!(json.contains("\"format\": \"bayesnas-genotype\""));
//! let mut report = RelevanceReport::from_prior(&prior);
//! report.set_network_layout(8)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod bayes;
#[allow(missing_docs)]
pub mod bench;
pub mod compress;
pub mod curvature;
pub mod derive;
pub mod draw;
pub mod genotype;
pub mod heatmap;
mod layers;
pub mod perturb;
pub mod random_cell;
pub mod relevance;
#[allow(missing_docs)] // fields are described by their struct's documentation
pub mod retrain;
#[allow(missing_docs)] // fields are described by their struct's documentation
pub mod searcher;
pub mod space;
#[allow(missing_docs)]
pub mod supernet;
mod svg;

pub use bayes::{BayesError, CellTypeStats, GroupId, GroupKind, Prior, UpdateConfig};
pub use derive::{derive, DeriveError, DeriveRule};
pub use genotype::{CellGenotype, Genotype, GenotypeError, KeptEdge, KeptOp};
pub use relevance::{RelevanceError, RelevanceReport};
pub use space::{CellType, Edge, Node, Op, SearchSpace, SpaceError};

/// Any error of this crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Search-space vocabulary.
    #[error(transparent)]
    Space(#[from] SpaceError),
    /// Prior and update.
    #[error(transparent)]
    Bayes(#[from] BayesError),
    /// Derivation.
    #[error(transparent)]
    Derive(#[from] DeriveError),
    /// Genotype validation and I/O.
    #[error(transparent)]
    Genotype(#[from] GenotypeError),
    /// Relevance report I/O.
    #[error(transparent)]
    Relevance(#[from] RelevanceError),
}
