//! The hierarchical ARD prior (HARD) on the switches and its closed-form update
//! (method note, sections 3 and 5), in `f64`.
//!
//! The update's arithmetic is the engine's hierarchical group-ARD update
//! ([`bayesnas_engine::ard`], on a CUDA device its kernel): a cell type is a hierarchy whose
//! parents are the edges, whose children are the candidate operations and whose members are
//! the cells. This module holds the prior, its layout, the checks that name the offending
//! group and cell, and the commit of the results.
//!
//! # Groups and layout
//!
//! Every edge `e` of a cell type has one parent group (switch `s0_e`) and one child group per
//! candidate operation `k` (switch `sk_e`). A group collects the switch at the same position
//! in every cell of that type. Within a cell type, groups are laid out edge by edge, parent
//! first: `index = e * (n_ops + 1)` for the parent and `e * (n_ops + 1) + 1 + k` for child
//! `k` ([`GroupKind::index`]). Per-cell values are stored row-major `[group][cell]`
//! ([`CellTypeStats`]).
//!
//! # The update
//!
//! For a group `g` with prior variance in force `gamma_g` and cells `c`:
//!
//! ```text
//! H_{g,c} = h_{g,c} / lambda_g                       (lambda_parent or lambda_child)
//! C_{g,c} = 1 / (1/gamma_g + H_{g,c})                 posterior variance (Laplace)
//! omega_g = sqrt( sum_c H_{g,c} / (1 + gamma_g H_{g,c}) )   each cell's OWN term
//! gamma_g' = ||s_g||_2 / omega_g
//! child:  gamma_tilde_k = 1 / (1/gamma_k' + 1/gamma0_e')   (with the NEW parent gamma)
//! ```
//!
//! The authors' code evaluates the omega term of every cell with the last cell's gamma (a
//! leftover loop index); this implementation uses each cell's own `H_{g,c}` with the group's
//! gamma, as the note requires.
//!
//! "Prior variance in force": for a parent group it is `gamma0`; for a child group it is
//! `gamma_tilde` (its prior is `N(0, gamma_tilde)`), exactly as the note's update overwrites a
//! child group's gamma with the combined value. Before the first update every group, child or
//! parent, has gamma = omega = 1 and `gamma_tilde = 1` (the combination is applied by the
//! update, as in the note and the authors' code; initialisation is deterministic).
//!
//! # Edge cases (all deterministic, never NaN or infinite)
//!
//! * `||s_g|| = 0`: `gamma = 0`, status [`GroupStatus::Dead`], whatever omega is.
//! * `omega_g = 0` (zero curvature in every cell: the data loss is flat in these switches, the
//!   Laplace approximation carries no evidence) or `||s||/omega` overflows: `gamma` keeps its
//!   previous value (no evidence, no update), status [`GroupStatus::NoCurvature`]; `omega` is
//!   stored as computed (0 removes the group's penalty in the next round).
//! * A previous `gamma = 0`: `C = 0` and the omega term is `H` (the limits of the formulas).
//! * A dead parent (`gamma0 = 0`) forces `gamma_tilde = 0` for every child of that edge; a dead
//!   child (`gamma_k = 0`) has `gamma_tilde = 0`.
//! * Negative curvature (impossible for the Gauss-Newton diagonal, so a sign of a bug) is an
//!   error by default; [`NegativeCurvature::ClampToZero`] clamps it instead.
//! * Non-finite `s` or `h`, and `lambda <= 0` or non-finite, are errors; on any error the prior
//!   is left unchanged.
//! * A cell type with zero cells in the network (`n_cells = 0`) is not updated.

use bayesnas_engine::ard;
use serde::{Deserialize, Serialize};

use crate::derive::CellRelevance;
use crate::space::{CellType, Edge, Op, SearchSpace, SpaceError};

mod stats;
mod update;

pub use ard::combine;
pub use stats::CellTypeStats;
pub use update::{update_group, GroupUpdate};

/// Errors of the prior and its update.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BayesError {
    /// A lambda that is not finite and positive.
    #[error("{name} must be finite and > 0, got {value}")]
    BadLambda {
        /// `lambda_parent` or `lambda_child`.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// Statistics whose shape does not match the prior.
    #[error("{cell} statistics: {msg}")]
    Shape {
        /// Cell type of the statistics.
        cell: CellType,
        /// What does not match.
        msg: String,
    },
    /// A NaN or infinite switch value or curvature.
    #[error("{cell} group {group} cell {index}: {what} is not finite ({value})")]
    NotFinite {
        /// Cell type.
        cell: CellType,
        /// The group (e.g. `edge 3 op sep_conv_3x3`).
        group: String,
        /// Cell index within the type.
        index: usize,
        /// `switch` or `curvature`.
        what: &'static str,
        /// The value.
        value: f64,
    },
    /// A negative curvature while [`NegativeCurvature::Reject`] is in force.
    #[error(
        "{cell} group {group} cell {index}: negative curvature {value} (the Gauss-Newton diagonal \
         is >= 0; use NegativeCurvature::ClampToZero to clamp)"
    )]
    NegativeCurvature {
        /// Cell type.
        cell: CellType,
        /// The group.
        group: String,
        /// Cell index within the type.
        index: usize,
        /// The value.
        value: f64,
    },
    /// A group that does not exist (edge or op index out of range).
    #[error("no group {kind:?} in the {cell} cells ({n_edges} edges x {n_ops} ops)")]
    NoSuchGroup {
        /// Cell type.
        cell: CellType,
        /// The group asked for.
        kind: GroupKind,
        /// Edges of that cell type.
        n_edges: usize,
        /// Ops per edge.
        n_ops: usize,
    },
    /// A cell index out of range.
    #[error("cell index {index} out of range ({n_cells} cells)")]
    NoSuchCell {
        /// The index given.
        index: usize,
        /// Number of cells.
        n_cells: usize,
    },
    /// An inconsistent prior (e.g. a hand-edited checkpoint).
    #[error("inconsistent prior: {0}")]
    Inconsistent(String),
    /// The device update could not run (no GPU, driver or kernel error).
    #[error("device HARD update: {0}")]
    Device(String),
    /// The search space is invalid.
    #[error(transparent)]
    Space(#[from] SpaceError),
}

/// Which switch of an edge a group holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GroupKind {
    /// The edge switch `s0_e`.
    Parent {
        /// Edge index in the cell type's edge list.
        edge: usize,
    },
    /// The operation switch `sk_e`.
    Child {
        /// Edge index in the cell type's edge list.
        edge: usize,
        /// Operation index in the space's op list.
        op: usize,
    },
}

impl GroupKind {
    /// The edge index.
    pub fn edge(self) -> usize {
        match self {
            GroupKind::Parent { edge } | GroupKind::Child { edge, .. } => edge,
        }
    }

    /// The op index for a child group, `None` for a parent.
    pub fn op(self) -> Option<usize> {
        match self {
            GroupKind::Parent { .. } => None,
            GroupKind::Child { op, .. } => Some(op),
        }
    }

    /// Flat group index within a cell type: `edge * (n_ops + 1)` for the parent,
    /// `edge * (n_ops + 1) + 1 + op` for a child.
    pub fn index(self, n_ops: usize) -> usize {
        match self {
            GroupKind::Parent { edge } => edge * (n_ops + 1),
            GroupKind::Child { edge, op } => edge * (n_ops + 1) + 1 + op,
        }
    }

    /// Inverse of [`GroupKind::index`].
    pub fn from_index(index: usize, n_ops: usize) -> GroupKind {
        let edge = index / (n_ops + 1);
        match index % (n_ops + 1) {
            0 => GroupKind::Parent { edge },
            r => GroupKind::Child { edge, op: r - 1 },
        }
    }

    fn describe(self, ops: &[Op]) -> String {
        match self {
            GroupKind::Parent { edge } => format!("edge {edge} parent"),
            GroupKind::Child { edge, op } => match ops.get(op) {
                Some(o) => format!("edge {edge} op {o}"),
                None => format!("edge {edge} op #{op}"),
            },
        }
    }
}

/// A group of a prior: cell type and switch position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupId {
    /// Cell type.
    pub cell_type: CellType,
    /// Switch position.
    pub kind: GroupKind,
}

/// What the last update did to a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupStatus {
    /// Never updated: gamma and omega are the initial values.
    Initial,
    /// Updated normally.
    Updated,
    /// `||s|| = 0`: gamma = 0.
    Dead,
    /// omega = 0 (or gamma overflowed): gamma kept its previous value.
    NoCurvature,
}

/// Per-cell quantities of a group in the last update.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CellStat {
    /// Switch value `s_{g,c}`.
    pub s: f64,
    /// Raw curvature `h_{g,c}` as given (after clamping, if clamping was asked for).
    pub h: f64,
    /// `H_{g,c} = h / lambda`.
    #[serde(rename = "H")]
    pub big_h: f64,
    /// Posterior variance `C_{g,c} = 1 / (1/gamma + H)`.
    #[serde(rename = "C")]
    pub c: f64,
}

/// State of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    /// The group's own gamma: `gamma0` for a parent, the raw `gamma_k = ||s||/omega` (before
    /// the parent combination) for a child.
    pub gamma: f64,
    /// The reweighting `omega_g` (used by the group-lasso penalty).
    pub omega: f64,
    /// What the last update did.
    pub status: GroupStatus,
    /// Per-cell values of the last update (empty before the first).
    pub cells: Vec<CellStat>,
}

impl GroupState {
    fn initial() -> GroupState {
        GroupState {
            gamma: 1.0,
            omega: 1.0,
            status: GroupStatus::Initial,
            cells: Vec::new(),
        }
    }
}

/// A child (operation) group and its effective relevance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildState {
    /// The operation.
    pub op: Op,
    /// The group's own state (`gamma` is the raw `gamma_k`).
    pub group: GroupState,
    /// `gamma_tilde_k = 1/(1/gamma_k + 1/gamma0)`: the child's prior variance in force and its
    /// effective relevance (used by the derivation).
    pub gamma_tilde: f64,
}

/// One edge: its parent group and one child group per operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgePrior {
    /// The edge.
    pub edge: Edge,
    /// The edge switch group (`gamma` is `gamma0`).
    pub parent: GroupState,
    /// One child per operation, in the space's op order.
    pub children: Vec<ChildState>,
}

/// All groups of one cell type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellPrior {
    /// Cell type.
    pub cell_type: CellType,
    /// Number of cells of this type in the last update (0 before the first).
    pub n_cells: usize,
    /// One entry per edge of the space, in the space's order.
    pub edges: Vec<EdgePrior>,
}

/// How to treat a negative curvature value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativeCurvature {
    /// Return [`BayesError::NegativeCurvature`] (default).
    #[default]
    Reject,
    /// Replace it with 0 (and count it in [`UpdateSummary::clamped`]).
    ClampToZero,
}

/// Parameters of one update.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// lambda for parent (edge) groups.
    pub lambda_parent: f64,
    /// lambda for child (operation) groups.
    pub lambda_child: f64,
    /// Negative-curvature policy.
    pub negative_curvature: NegativeCurvature,
}

impl UpdateConfig {
    /// One lambda for both kinds (the authors' released models), rejecting negative curvature.
    pub fn new(lambda: f64) -> UpdateConfig {
        UpdateConfig {
            lambda_parent: lambda,
            lambda_child: lambda,
            negative_curvature: NegativeCurvature::Reject,
        }
    }

    fn validate(&self) -> Result<(), BayesError> {
        for (name, value) in [
            ("lambda_parent", self.lambda_parent),
            ("lambda_child", self.lambda_child),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(BayesError::BadLambda { name, value });
            }
        }
        Ok(())
    }
}

/// Counts from one [`Prior::update`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSummary {
    /// Groups updated normally.
    pub updated: usize,
    /// Groups with `||s|| = 0`.
    pub dead: usize,
    /// Groups with no curvature (gamma kept).
    pub no_curvature: usize,
    /// Curvature values clamped to zero.
    pub clamped: usize,
    /// Cell types skipped because they have no cells.
    pub skipped_cell_types: usize,
}

/// The HARD prior of a search space: one [`CellPrior`] per cell type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prior {
    space: String,
    ops: Vec<Op>,
    normal: CellPrior,
    reduce: CellPrior,
    rounds: usize,
    last_config: Option<UpdateConfig>,
}

impl Prior {
    /// The initial prior of `space`: gamma = omega = 1 and gamma_tilde = 1 for every group.
    pub fn new(space: &SearchSpace) -> Result<Prior, BayesError> {
        space.validate()?;
        let cell = |cell_type: CellType| CellPrior {
            cell_type,
            n_cells: 0,
            edges: space
                .edges(cell_type)
                .iter()
                .map(|&edge| EdgePrior {
                    edge,
                    parent: GroupState::initial(),
                    children: space
                        .ops
                        .iter()
                        .map(|&op| ChildState {
                            op,
                            group: GroupState::initial(),
                            gamma_tilde: 1.0,
                        })
                        .collect(),
                })
                .collect(),
        };
        Ok(Prior {
            space: space.name.clone(),
            ops: space.ops.clone(),
            normal: cell(CellType::Normal),
            reduce: cell(CellType::Reduce),
            rounds: 0,
            last_config: None,
        })
    }

    /// Name of the search space.
    pub fn space(&self) -> &str {
        &self.space
    }

    /// Candidate operations (child order).
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Number of updates applied.
    pub fn rounds(&self) -> usize {
        self.rounds
    }

    /// The configuration of the last update, if any.
    pub fn last_config(&self) -> Option<&UpdateConfig> {
        self.last_config.as_ref()
    }

    /// The groups of one cell type.
    pub fn cell(&self, cell_type: CellType) -> &CellPrior {
        match cell_type {
            CellType::Normal => &self.normal,
            CellType::Reduce => &self.reduce,
        }
    }

    fn cell_mut(&mut self, cell_type: CellType) -> &mut CellPrior {
        match cell_type {
            CellType::Normal => &mut self.normal,
            CellType::Reduce => &mut self.reduce,
        }
    }

    /// Zero statistics shaped for `cell_type` with `n_cells` cells, to be filled by the caller.
    pub fn stats_template(&self, cell_type: CellType, n_cells: usize) -> CellTypeStats {
        CellTypeStats::zeros(self.cell(cell_type).edges.len(), self.ops.len(), n_cells)
    }

    /// Checks internal consistency (useful after deserialising a checkpoint).
    pub fn validate(&self) -> Result<(), BayesError> {
        for ct in CellType::ALL {
            let cell = self.cell(ct);
            if cell.cell_type != ct {
                return Err(BayesError::Inconsistent(format!(
                    "cell prior for {ct} is labelled {}",
                    cell.cell_type
                )));
            }
            for (e, ep) in cell.edges.iter().enumerate() {
                ep.edge.validate()?;
                let ops: Vec<Op> = ep.children.iter().map(|c| c.op).collect();
                if ops != self.ops {
                    return Err(BayesError::Inconsistent(format!(
                        "{ct} edge {e}: children {ops:?} differ from the op list {:?}",
                        self.ops
                    )));
                }
                let groups =
                    std::iter::once(&ep.parent).chain(ep.children.iter().map(|c| &c.group));
                for g in groups {
                    if !(g.gamma.is_finite()
                        && g.gamma >= 0.0
                        && g.omega.is_finite()
                        && g.omega >= 0.0)
                    {
                        return Err(BayesError::Inconsistent(format!(
                            "{ct} edge {e}: gamma {} / omega {} must be finite and >= 0",
                            g.gamma, g.omega
                        )));
                    }
                }
                for c in &ep.children {
                    if !(c.gamma_tilde.is_finite() && c.gamma_tilde >= 0.0) {
                        return Err(BayesError::Inconsistent(format!(
                            "{ct} edge {e} op {}: gamma_tilde {} must be finite and >= 0",
                            c.op, c.gamma_tilde
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_stats(&self, cell_type: CellType, stats: &CellTypeStats) -> Result<(), BayesError> {
        let n_edges = self.cell(cell_type).edges.len();
        if stats.n_edges() != n_edges || stats.n_ops() != self.ops.len() {
            return Err(BayesError::Shape {
                cell: cell_type,
                msg: format!(
                    "statistics have {} edges x {} ops, the prior has {} x {}",
                    stats.n_edges(),
                    stats.n_ops(),
                    n_edges,
                    self.ops.len()
                ),
            });
        }
        Ok(())
    }

    fn group(&self, id: GroupId) -> Result<&GroupState, BayesError> {
        let cell = self.cell(id.cell_type);
        let missing = || BayesError::NoSuchGroup {
            cell: id.cell_type,
            kind: id.kind,
            n_edges: cell.edges.len(),
            n_ops: self.ops.len(),
        };
        let ep = cell.edges.get(id.kind.edge()).ok_or_else(missing)?;
        match id.kind {
            GroupKind::Parent { .. } => Ok(&ep.parent),
            GroupKind::Child { op, .. } => {
                ep.children.get(op).map(|c| &c.group).ok_or_else(missing)
            }
        }
    }

    /// The state of one group.
    pub fn group_state(&self, id: GroupId) -> Result<&GroupState, BayesError> {
        self.group(id)
    }

    /// `omega_g` for the reweighted group-lasso term `lambda_g * omega_g * ||s_g||_2` of the
    /// next switch epoch (note section 4). 1 before the first update.
    pub fn omega_for_penalty(&self, id: GroupId) -> Result<f64, BayesError> {
        Ok(self.group(id)?.omega)
    }

    /// omega of every group of a cell type, in the flat group layout (for the device).
    pub fn omegas(&self, cell_type: CellType) -> Vec<f64> {
        self.cell(cell_type)
            .edges
            .iter()
            .flat_map(|ep| {
                std::iter::once(ep.parent.omega).chain(ep.children.iter().map(|c| c.group.omega))
            })
            .collect()
    }

    /// Own gamma of every group of a cell type, in the flat group layout: `gamma0` for
    /// parents, the raw `gamma_k` for children (what an update keeps without evidence).
    pub fn own_gammas(&self, cell_type: CellType) -> Vec<f64> {
        self.cell(cell_type)
            .edges
            .iter()
            .flat_map(|ep| {
                std::iter::once(ep.parent.gamma).chain(ep.children.iter().map(|c| c.group.gamma))
            })
            .collect()
    }

    /// Prior variance in force of every group of a cell type, in the flat group layout:
    /// `gamma0` for parents, `gamma_tilde` for children (the `gamma` the next update uses).
    pub fn gammas_in_force(&self, cell_type: CellType) -> Vec<f64> {
        self.cell(cell_type)
            .edges
            .iter()
            .flat_map(|ep| {
                std::iter::once(ep.parent.gamma).chain(ep.children.iter().map(|c| c.gamma_tilde))
            })
            .collect()
    }

    /// The penalty `sum_g lambda_g * omega_g * ||s_g||_2` over both cell types (CPU reference
    /// for the training objective; only the switch values of the statistics are used).
    pub fn penalty(
        &self,
        normal: &CellTypeStats,
        reduce: &CellTypeStats,
        lambda_parent: f64,
        lambda_child: f64,
    ) -> Result<f64, BayesError> {
        UpdateConfig {
            lambda_parent,
            lambda_child,
            negative_curvature: NegativeCurvature::Reject,
        }
        .validate()?;
        let mut total = 0.0;
        for (ct, stats) in [(CellType::Normal, normal), (CellType::Reduce, reduce)] {
            self.check_stats(ct, stats)?;
            let omegas = self.omegas(ct);
            for (g, omega) in omegas.iter().enumerate() {
                let kind = GroupKind::from_index(g, self.ops.len());
                let lambda = if kind.op().is_some() {
                    lambda_child
                } else {
                    lambda_parent
                };
                total += lambda * omega * ard::scaled_norm(stats.s(kind).unwrap_or_default());
            }
        }
        Ok(total)
    }

    /// The relevances of one cell type, the input of the derivation ([`crate::derive`](mod@crate::derive)).
    pub fn cell_relevance(&self, cell_type: CellType) -> CellRelevance {
        let cell = self.cell(cell_type);
        CellRelevance {
            edges: cell.edges.iter().map(|e| e.edge).collect(),
            ops: self.ops.clone(),
            gamma0: cell.edges.iter().map(|e| e.parent.gamma).collect(),
            gamma_tilde: cell
                .edges
                .iter()
                .map(|e| e.children.iter().map(|c| c.gamma_tilde).collect())
                .collect(),
        }
    }
}

/// A prior of the BayesNAS space after one update (`lambda` 0.005) from statistics of 6
/// normal and 2 reduction cells: group `g` (of kind `kind`) in cell `c` of a cell type with
/// `n_cells` cells gets `(switch, curvature) = stats(kind, g, n_cells, c)`.
#[cfg(test)]
pub(crate) fn updated_bayesnas_prior(
    stats: impl Fn(GroupKind, usize, usize, usize) -> (f64, f64),
) -> Prior {
    let space = SearchSpace::bayesnas();
    let mut prior = Prior::new(&space).unwrap();
    let mut n = prior.stats_template(CellType::Normal, 6);
    let mut r = prior.stats_template(CellType::Reduce, 2);
    for st in [&mut n, &mut r] {
        for g in 0..st.n_groups() {
            let kind = GroupKind::from_index(g, 7);
            for c in 0..st.n_cells() {
                let (s, h) = stats(kind, g, st.n_cells(), c);
                st.set(kind, c, s, h).unwrap();
            }
        }
    }
    prior.update(&n, &r, &UpdateConfig::new(0.005)).unwrap();
    prior
}
