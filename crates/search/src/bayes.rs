//! The hierarchical ARD prior (HARD) on the switches and its closed-form update
//! (method note, sections 3 and 5), on the host in `f64`.
//!
//! This is the CPU reference for the device kernel: same group layout, same formulas, same
//! edge cases.
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

use bayesnas_engine::device::cuda::{self, hard_status, HardInput, HardOutput};
use bayesnas_engine::Device;
use serde::{Deserialize, Serialize};

use crate::derive::CellRelevance;
use crate::space::{CellType, Edge, Op, SearchSpace, SpaceError};

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

/// Switch values and curvatures of every group of one cell type, for every cell of that type.
///
/// Stored row-major `[group][cell]` with the group layout of [`GroupKind::index`].
#[derive(Debug, Clone, PartialEq)]
pub struct CellTypeStats {
    n_edges: usize,
    n_ops: usize,
    n_cells: usize,
    s: Vec<f64>,
    h: Vec<f64>,
}

impl CellTypeStats {
    /// All-zero statistics of the given shape.
    pub fn zeros(n_edges: usize, n_ops: usize, n_cells: usize) -> CellTypeStats {
        let n = n_edges * (n_ops + 1) * n_cells;
        CellTypeStats {
            n_edges,
            n_ops,
            n_cells,
            s: vec![0.0; n],
            h: vec![0.0; n],
        }
    }

    /// Wraps flat `[group][cell]` buffers (e.g. copied back from the device).
    pub fn from_flat(
        n_edges: usize,
        n_ops: usize,
        n_cells: usize,
        s: Vec<f64>,
        h: Vec<f64>,
    ) -> Result<CellTypeStats, BayesError> {
        let n = n_ops
            .checked_add(1)
            .and_then(|g| g.checked_mul(n_edges))
            .and_then(|g| g.checked_mul(n_cells))
            .ok_or_else(|| BayesError::Inconsistent("statistics shape overflows".into()))?;
        if s.len() != n || h.len() != n {
            return Err(BayesError::Inconsistent(format!(
                "flat statistics need {n} values ({n_edges} edges x {} groups per edge x \
                 {n_cells} cells), got s: {}, h: {}",
                n_ops + 1,
                s.len(),
                h.len()
            )));
        }
        Ok(CellTypeStats {
            n_edges,
            n_ops,
            n_cells,
            s,
            h,
        })
    }

    /// Number of edges.
    pub fn n_edges(&self) -> usize {
        self.n_edges
    }

    /// Number of operations per edge.
    pub fn n_ops(&self) -> usize {
        self.n_ops
    }

    /// Number of cells of this type.
    pub fn n_cells(&self) -> usize {
        self.n_cells
    }

    /// Number of groups (`n_edges * (n_ops + 1)`).
    pub fn n_groups(&self) -> usize {
        self.n_edges * (self.n_ops + 1)
    }

    fn group_offset(&self, kind: GroupKind) -> Option<usize> {
        let ok = kind.edge() < self.n_edges && kind.op().is_none_or(|k| k < self.n_ops);
        ok.then(|| kind.index(self.n_ops) * self.n_cells)
    }

    /// Sets `s_{g,c}` and `h_{g,c}` for group `kind` and cell `cell`.
    pub fn set(&mut self, kind: GroupKind, cell: usize, s: f64, h: f64) -> Result<(), BayesError> {
        let off = self
            .group_offset(kind)
            .ok_or(BayesError::Inconsistent(format!(
                "no group {kind:?} in statistics of {} edges x {} ops",
                self.n_edges, self.n_ops
            )))?;
        if cell >= self.n_cells {
            return Err(BayesError::NoSuchCell {
                index: cell,
                n_cells: self.n_cells,
            });
        }
        self.s[off + cell] = s;
        self.h[off + cell] = h;
        Ok(())
    }

    /// Switch values of a group, one per cell (`None` if the group does not exist).
    pub fn s(&self, kind: GroupKind) -> Option<&[f64]> {
        let off = self.group_offset(kind)?;
        Some(&self.s[off..off + self.n_cells])
    }

    /// Curvatures of a group, one per cell (`None` if the group does not exist).
    pub fn h(&self, kind: GroupKind) -> Option<&[f64]> {
        let off = self.group_offset(kind)?;
        Some(&self.h[off..off + self.n_cells])
    }

    /// The flat switch buffer, `[group][cell]`.
    pub fn s_flat(&self) -> &[f64] {
        &self.s
    }

    /// The flat curvature buffer, `[group][cell]`.
    pub fn h_flat(&self) -> &[f64] {
        &self.h
    }
}

/// Result of updating one group from its cells ([`update_group`]).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupUpdate {
    /// The new gamma `||s||/omega`, `Some(0.0)` for a dead group, `None` when there is no
    /// evidence (omega = 0 or overflow): the caller keeps the previous gamma.
    pub gamma: Option<f64>,
    /// The new omega.
    pub omega: f64,
    /// Status of the group after the update.
    pub status: GroupStatus,
    /// Per-cell `s, h, H, C`.
    pub cells: Vec<CellStat>,
    /// How many curvatures were clamped to 0.
    pub clamped: usize,
}

/// Euclidean norm, scaled so that large values do not overflow.
fn l2_norm(xs: &[f64]) -> f64 {
    let scale = xs.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    if scale == 0.0 {
        return 0.0;
    }
    scale * xs.iter().map(|x| (x / scale).powi(2)).sum::<f64>().sqrt()
}

/// The closed-form update of one group (note section 5), the reference for the device kernel.
///
/// `gamma` is the group's prior variance in force (parent: `gamma0`; child: `gamma_tilde`),
/// `s` and `h` the switch values and curvatures of the group's cells (same length), `lambda`
/// the group's lambda, `policy` the treatment of negative curvature. Every cell contributes
/// its own term `H_c / (1 + gamma H_c)` to omega. See the module documentation for the edge
/// cases; an empty group (no cells) counts as dead.
pub fn update_group(
    gamma: f64,
    s: &[f64],
    h: &[f64],
    lambda: f64,
    policy: NegativeCurvature,
) -> Result<GroupUpdate, BayesError> {
    update_group_labelled(gamma, s, h, lambda, policy, CellType::Normal, "group")
}

fn update_group_labelled(
    gamma: f64,
    s: &[f64],
    h: &[f64],
    lambda: f64,
    policy: NegativeCurvature,
    cell: CellType,
    group: &str,
) -> Result<GroupUpdate, BayesError> {
    if !(lambda.is_finite() && lambda > 0.0) {
        return Err(BayesError::BadLambda {
            name: "lambda",
            value: lambda,
        });
    }
    if !(gamma.is_finite() && gamma >= 0.0) {
        return Err(BayesError::Inconsistent(format!(
            "{cell} {group}: prior gamma must be finite and >= 0, got {gamma}"
        )));
    }
    if s.len() != h.len() {
        return Err(BayesError::Shape {
            cell,
            msg: format!(
                "{group}: {} switch values but {} curvatures",
                s.len(),
                h.len()
            ),
        });
    }
    let mut clamped = 0;
    let mut cells = Vec::with_capacity(s.len());
    let mut omega_sq = 0.0;
    for (index, (&sc, &hc)) in s.iter().zip(h).enumerate() {
        for (what, value) in [("switch", sc), ("curvature", hc)] {
            if !value.is_finite() {
                return Err(BayesError::NotFinite {
                    cell,
                    group: group.to_string(),
                    index,
                    what,
                    value,
                });
            }
        }
        let hc = if hc < 0.0 {
            match policy {
                NegativeCurvature::Reject => {
                    return Err(BayesError::NegativeCurvature {
                        cell,
                        group: group.to_string(),
                        index,
                        value: hc,
                    })
                }
                NegativeCurvature::ClampToZero => {
                    clamped += 1;
                    0.0
                }
            }
        } else {
            hc
        };
        let big_h = hc / lambda;
        // C = 1/(1/gamma + H); with gamma = 0 the limit is 0.
        let c = if gamma == 0.0 {
            0.0
        } else {
            1.0 / (1.0 / gamma + big_h)
        };
        // Each cell's own term: 1/gamma - C/gamma^2 = H / (1 + gamma H).
        let term = big_h / (1.0 + gamma * big_h);
        omega_sq += if term.is_finite() { term } else { 0.0 };
        cells.push(CellStat {
            s: sc,
            h: hc,
            big_h,
            c,
        });
    }
    let omega = omega_sq.sqrt();
    let norm = l2_norm(s);
    let (gamma_new, status) = if norm == 0.0 {
        (Some(0.0), GroupStatus::Dead)
    } else {
        let g = norm / omega;
        if omega > 0.0 && g.is_finite() {
            (Some(g), GroupStatus::Updated)
        } else {
            (None, GroupStatus::NoCurvature)
        }
    };
    Ok(GroupUpdate {
        gamma: gamma_new,
        omega,
        status,
        cells,
        clamped,
    })
}

/// The hierarchical combination `1 / (1/gamma_child + 1/gamma_parent)`; 0 if either is 0.
pub fn combine(gamma_child: f64, gamma_parent: f64) -> f64 {
    if gamma_child <= 0.0 || gamma_parent <= 0.0 {
        0.0
    } else {
        1.0 / (1.0 / gamma_child + 1.0 / gamma_parent)
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
        if stats.n_edges != n_edges || stats.n_ops != self.ops.len() {
            return Err(BayesError::Shape {
                cell: cell_type,
                msg: format!(
                    "statistics have {} edges x {} ops, the prior has {} x {}",
                    stats.n_edges,
                    stats.n_ops,
                    n_edges,
                    self.ops.len()
                ),
            });
        }
        Ok(())
    }

    /// The closed-form update of every group from one switch epoch (note section 5).
    ///
    /// `normal` and `reduce` hold `s_{g,c}` and `h_{g,c}` for every group and every cell of
    /// that type. Parents are updated first; each child then uses its edge's NEW `gamma0` in
    /// the combination. All inputs are checked before anything changes: on error the prior is
    /// unchanged.
    pub fn update(
        &mut self,
        normal: &CellTypeStats,
        reduce: &CellTypeStats,
        config: &UpdateConfig,
    ) -> Result<UpdateSummary, BayesError> {
        self.check_update(normal, reduce, config)?;
        // Compute into a copy; commit only on success.
        let mut next = self.clone();
        let mut summary = UpdateSummary::default();
        for (ct, stats) in [(CellType::Normal, normal), (CellType::Reduce, reduce)] {
            if stats.n_cells == 0 {
                summary.skipped_cell_types += 1;
                continue;
            }
            let ops = self.ops.clone();
            let cell = next.cell_mut(ct);
            cell.n_cells = stats.n_cells;
            for (e, ep) in cell.edges.iter_mut().enumerate() {
                let kind = GroupKind::Parent { edge: e };
                let up = update_group_labelled(
                    ep.parent.gamma,
                    stats.s(kind).unwrap_or_default(),
                    stats.h(kind).unwrap_or_default(),
                    config.lambda_parent,
                    config.negative_curvature,
                    ct,
                    &kind.describe(&ops),
                )?;
                apply(&mut ep.parent, up, &mut summary);
                let gamma0 = ep.parent.gamma;
                for (k, child) in ep.children.iter_mut().enumerate() {
                    let kind = GroupKind::Child { edge: e, op: k };
                    let up = update_group_labelled(
                        child.gamma_tilde,
                        stats.s(kind).unwrap_or_default(),
                        stats.h(kind).unwrap_or_default(),
                        config.lambda_child,
                        config.negative_curvature,
                        ct,
                        &kind.describe(&ops),
                    )?;
                    apply(&mut child.group, up, &mut summary);
                    child.gamma_tilde = combine(child.group.gamma, gamma0);
                }
            }
        }
        self.commit(next, config);
        Ok(summary)
    }

    /// [`Prior::update`] computed on `device`: on a CUDA device the `hard_update` kernel
    /// computes gamma, omega, `gamma_tilde` and every cell's `C` for all groups of a cell type
    /// in one launch (f64, the same arithmetic as the CPU), and the result is committed here;
    /// on the CPU this is [`Prior::update`]. Errors leave the prior unchanged; for bad
    /// statistics the error is the host update's (which names the group and cell).
    pub fn update_on(
        &mut self,
        device: Device,
        normal: &CellTypeStats,
        reduce: &CellTypeStats,
        config: &UpdateConfig,
    ) -> Result<UpdateSummary, BayesError> {
        let Device::Cuda(ordinal) = device else {
            return self.update(normal, reduce, config);
        };
        let dev_err =
            |e: bayesnas_engine::Error| BayesError::Device(format!("cuda:{ordinal}: {e}"));
        let be = cuda::backend(ordinal).map_err(dev_err)?;
        self.update_with(normal, reduce, config, &mut |inp| {
            be.hard_update(inp).map_err(dev_err)
        })
    }

    /// [`Prior::update`] with the per-cell-type arithmetic done by `kernel`, which must behave
    /// as `kernels/bayes.cu::hard_update` (the CUDA backend's [`cuda::CudaBackend::hard_update`];
    /// tests pass the host-emulated kernel). The results are committed as [`Prior::update`]
    /// would; errors leave the prior unchanged.
    pub fn update_with(
        &mut self,
        normal: &CellTypeStats,
        reduce: &CellTypeStats,
        config: &UpdateConfig,
        kernel: &mut dyn FnMut(&HardInput<'_>) -> Result<HardOutput, BayesError>,
    ) -> Result<UpdateSummary, BayesError> {
        self.check_update(normal, reduce, config)?;
        let mut next = self.clone();
        let mut summary = UpdateSummary::default();
        for (ct, stats) in [(CellType::Normal, normal), (CellType::Reduce, reduce)] {
            if stats.n_cells == 0 {
                summary.skipped_cell_types += 1;
                continue;
            }
            let gamma_prev = self.own_gammas(ct);
            let gamma_in = self.gammas_in_force(ct);
            let out = kernel(&HardInput {
                n_edges: stats.n_edges,
                n_ops: stats.n_ops,
                n_cells: stats.n_cells,
                s: &stats.s,
                h: &stats.h,
                gamma_in: &gamma_in,
                gamma_prev: &gamma_prev,
                lambda_parent: config.lambda_parent,
                lambda_child: config.lambda_child,
                clamp_negative: config.negative_curvature == NegativeCurvature::ClampToZero,
            })?;
            let groups = stats.n_groups();
            if [out.gamma.len(), out.omega.len(), out.tilde.len()]
                .iter()
                .chain([out.status.len(), out.clamped.len()].iter())
                .any(|&l| l != groups)
                || out.c.len() != groups * stats.n_cells
            {
                return Err(BayesError::Device(format!(
                    "{ct}: the kernel returned outputs of the wrong length"
                )));
            }
            if let Some(g) = out.status.iter().position(|&st| st < 0) {
                // The host update rejects the same statistics and says where.
                return match self.clone().update(normal, reduce, config) {
                    Err(e) => Err(e),
                    Ok(_) => Err(BayesError::Device(format!(
                        "the kernel reported status {} for {ct} group {g} but the host update \
                         accepts the statistics",
                        out.status[g]
                    ))),
                };
            }
            let nc = stats.n_cells;
            let per_edge = stats.n_ops + 1;
            let cell = next.cell_mut(ct);
            cell.n_cells = nc;
            for (e, ep) in cell.edges.iter_mut().enumerate() {
                for j in 0..per_edge {
                    let g = e * per_edge + j;
                    let (state, lambda) = if j == 0 {
                        (&mut ep.parent, config.lambda_parent)
                    } else {
                        let child = &mut ep.children[j - 1];
                        child.gamma_tilde = out.tilde[g];
                        (&mut child.group, config.lambda_child)
                    };
                    let status = match out.status[g] {
                        hard_status::UPDATED => GroupStatus::Updated,
                        hard_status::DEAD => GroupStatus::Dead,
                        hard_status::NO_CURVATURE => GroupStatus::NoCurvature,
                        other => {
                            return Err(BayesError::Device(format!(
                                "unknown status {other} for {ct} group {g}"
                            )))
                        }
                    };
                    let cells = (0..nc)
                        .map(|c| {
                            let i = g * nc + c;
                            let h = if stats.h[i] < 0.0 { 0.0 } else { stats.h[i] };
                            CellStat {
                                s: stats.s[i],
                                h,
                                big_h: h / lambda,
                                c: out.c[i],
                            }
                        })
                        .collect();
                    // The kernel returns the previous gamma where the host keeps it.
                    let up = GroupUpdate {
                        gamma: Some(out.gamma[g]),
                        omega: out.omega[g],
                        status,
                        cells,
                        clamped: out.clamped[g].max(0) as usize,
                    };
                    apply(state, up, &mut summary);
                }
            }
        }
        self.commit(next, config);
        Ok(summary)
    }

    /// Everything [`Prior::update`] checks before it computes anything.
    fn check_update(
        &self,
        normal: &CellTypeStats,
        reduce: &CellTypeStats,
        config: &UpdateConfig,
    ) -> Result<(), BayesError> {
        config.validate()?;
        self.validate()?;
        self.check_stats(CellType::Normal, normal)?;
        self.check_stats(CellType::Reduce, reduce)
    }

    /// Makes the updated copy `next` the prior (one more round, under `config`).
    fn commit(&mut self, mut next: Prior, config: &UpdateConfig) {
        next.rounds += 1;
        next.last_config = Some(*config);
        *self = next;
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
                total += lambda * omega * l2_norm(stats.s(kind).unwrap_or_default());
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

fn apply(state: &mut GroupState, up: GroupUpdate, summary: &mut UpdateSummary) {
    match up.status {
        GroupStatus::Dead => summary.dead += 1,
        GroupStatus::NoCurvature => summary.no_curvature += 1,
        _ => summary.updated += 1,
    }
    summary.clamped += up.clamped;
    if let Some(g) = up.gamma {
        state.gamma = g;
    }
    state.omega = up.omega;
    state.status = up.status;
    state.cells = up.cells;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Node;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + b.abs())
    }

    macro_rules! assert_close {
        ($a:expr, $b:expr) => {{
            let (a, b) = ($a, $b);
            assert!(close(a, b), "{} = {a} but expected {b}", stringify!($a));
        }};
    }

    /// 2 edges (in0->n0, in1->n0), 2 ops (sep_conv_3x3, skip_connect).
    fn tiny_space() -> SearchSpace {
        let edges = vec![Edge::new(Node::In0, 0), Edge::new(Node::In1, 0)];
        SearchSpace {
            name: "tiny".into(),
            normal: edges.clone(),
            reduce: edges,
            ops: vec![Op::SepConv3x3, Op::SkipConnect],
        }
    }

    const P0: GroupKind = GroupKind::Parent { edge: 0 };
    const P1: GroupKind = GroupKind::Parent { edge: 1 };
    const C00: GroupKind = GroupKind::Child { edge: 0, op: 0 };
    const C01: GroupKind = GroupKind::Child { edge: 0, op: 1 };
    const C10: GroupKind = GroupKind::Child { edge: 1, op: 0 };
    const C11: GroupKind = GroupKind::Child { edge: 1, op: 1 };

    #[test]
    fn group_layout_round_trips() {
        for n_ops in [1, 2, 7] {
            for i in 0..5 * (n_ops + 1) {
                assert_eq!(GroupKind::from_index(i, n_ops).index(n_ops), i);
            }
        }
        assert_eq!(GroupKind::Parent { edge: 1 }.index(7), 8);
        assert_eq!(GroupKind::Child { edge: 1, op: 6 }.index(7), 15);
    }

    /// Hand-computed update of a 2-cell, 2-edge, 2-op example (normal cells), prior gamma = 1
    /// everywhere, lambda_parent = 0.5, lambda_child = 0.25.
    #[test]
    fn update_matches_hand_computation() {
        let space = tiny_space();
        let mut prior = Prior::new(&space).unwrap();
        let mut st = prior.stats_template(CellType::Normal, 2);
        // Parent, edge 0: s = (3, 4), h = (0.5, 0.5) -> H = h/0.5 = (1, 1)
        //   C = 1/(1/1 + 1) = 1/2 for both cells
        //   omega = sqrt(1/(1+1) + 1/(1+1)) = sqrt(1) = 1
        //   gamma0 = ||(3,4)|| / 1 = 5
        st.set(P0, 0, 3.0, 0.5).unwrap();
        st.set(P0, 1, 4.0, 0.5).unwrap();
        // Parent, edge 1: s = (0.6, 0.8), h = (1.5, 0) -> H = (3, 0)
        //   C = (1/(1+3), 1/(1+0)) = (1/4, 1)
        //   omega = sqrt(3/(1+3) + 0) = sqrt(3)/2
        //   gamma0 = 1 / (sqrt(3)/2) = 2/sqrt(3)
        st.set(P1, 0, 0.6, 1.5).unwrap();
        st.set(P1, 1, 0.8, 0.0).unwrap();
        // Child edge 0 op 0: s = (1, 1), h = (0.75, 0.75) -> H = h/0.25 = (3, 3)
        //   C = (1/4, 1/4); omega = sqrt(3/4 + 3/4) = sqrt(3/2)
        //   gamma_k = sqrt(2) / sqrt(3/2) = 2/sqrt(3)
        //   gamma_tilde = 1/(sqrt(3)/2 + 1/5)
        st.set(C00, 0, 1.0, 0.75).unwrap();
        st.set(C00, 1, 1.0, 0.75).unwrap();
        // Child edge 0 op 1: s = (0, 0) -> dead: gamma_k = 0, gamma_tilde = 0
        //   h = (0.25, 0.5) -> H = (1, 2); C = (1/2, 1/3); omega = sqrt(1/2 + 2/3) = sqrt(7/6)
        st.set(C01, 0, 0.0, 0.25).unwrap();
        st.set(C01, 1, 0.0, 0.5).unwrap();
        // Child edge 1 op 0: s = (2, 0), h = (0.25, 0.25) -> H = (1, 1)
        //   omega = 1, gamma_k = 2, gamma_tilde = 1/(1/2 + sqrt(3)/2) = 2/(1 + sqrt(3))
        st.set(C10, 0, 2.0, 0.25).unwrap();
        st.set(C10, 1, 0.0, 0.25).unwrap();
        // Child edge 1 op 1: s = (0.5, 0.5), h = (0, 0) -> omega = 0: no curvature,
        //   gamma_k stays 1, C = (1, 1), gamma_tilde = 1/(1 + sqrt(3)/2) = 2/(2 + sqrt(3))
        st.set(C11, 0, 0.5, 0.0).unwrap();
        st.set(C11, 1, 0.5, 0.0).unwrap();

        let reduce = prior.stats_template(CellType::Reduce, 0);
        let cfg = UpdateConfig {
            lambda_parent: 0.5,
            lambda_child: 0.25,
            negative_curvature: NegativeCurvature::Reject,
        };
        let summary = prior.update(&st, &reduce, &cfg).unwrap();
        assert_eq!(
            summary,
            UpdateSummary {
                updated: 4,
                dead: 1,
                no_curvature: 1,
                clamped: 0,
                skipped_cell_types: 1
            }
        );
        let s3 = 3f64.sqrt();
        let cell = prior.cell(CellType::Normal);
        let e0 = &cell.edges[0];
        let e1 = &cell.edges[1];

        assert_close!(e0.parent.gamma, 5.0);
        assert_close!(e0.parent.omega, 1.0);
        assert_close!(e0.parent.cells[0].big_h, 1.0);
        assert_close!(e0.parent.cells[1].c, 0.5);
        assert_eq!(e0.parent.cells[1].s, 4.0);

        assert_close!(e1.parent.gamma, 2.0 / s3);
        assert_close!(e1.parent.omega, s3 / 2.0);
        assert_close!(e1.parent.cells[0].c, 0.25);
        assert_close!(e1.parent.cells[1].c, 1.0);

        let c00 = &e0.children[0];
        assert_close!(c00.group.omega, 1.5f64.sqrt());
        assert_close!(c00.group.gamma, 2.0 / s3);
        assert_close!(c00.gamma_tilde, 1.0 / (s3 / 2.0 + 0.2));
        assert_close!(c00.group.cells[0].big_h, 3.0);
        assert_close!(c00.group.cells[1].c, 0.25);

        let c01 = &e0.children[1];
        assert_eq!(c01.group.status, GroupStatus::Dead);
        assert_eq!(c01.group.gamma, 0.0);
        assert_eq!(c01.gamma_tilde, 0.0);
        assert_close!(c01.group.omega, (7.0f64 / 6.0).sqrt());
        assert_close!(c01.group.cells[1].c, 1.0 / 3.0);

        let c10 = &e1.children[0];
        assert_close!(c10.group.gamma, 2.0);
        assert_close!(c10.gamma_tilde, 2.0 / (1.0 + s3));

        let c11 = &e1.children[1];
        assert_eq!(c11.group.status, GroupStatus::NoCurvature);
        assert_eq!(c11.group.gamma, 1.0);
        assert_eq!(c11.group.omega, 0.0);
        assert_close!(c11.gamma_tilde, 2.0 / (2.0 + s3));
        assert_close!(c11.group.cells[0].c, 1.0);

        // Reduce cells had no cells: untouched.
        let r = prior.cell(CellType::Reduce);
        assert_eq!(r.edges[0].parent.status, GroupStatus::Initial);
        assert_eq!(r.edges[0].children[0].gamma_tilde, 1.0);

        // The penalty uses the new omegas.
        assert_close!(
            prior
                .omega_for_penalty(GroupId {
                    cell_type: CellType::Normal,
                    kind: P1
                })
                .unwrap(),
            s3 / 2.0
        );
        assert_eq!(prior.rounds(), 1);
    }

    /// Each cell contributes its own term. The authors' loop evaluates every cell's term with
    /// the last cell's quantities; with one gamma per group that amounts to
    /// `n_cells * H_last / (1 + gamma H_last)`. Here H = (3, 1, 0) with gamma = 1:
    /// correct omega^2 = 3/4 + 1/2 + 0 = 5/4; last-cell-only would give 3 * 0 = 0.
    #[test]
    fn omega_uses_each_cells_own_term() {
        let up = update_group(
            1.0,
            &[1.0, 1.0, 1.0],
            &[3.0, 1.0, 0.0],
            1.0,
            NegativeCurvature::Reject,
        )
        .unwrap();
        assert_close!(up.omega, 1.25f64.sqrt());
        assert_close!(up.gamma.unwrap(), 3f64.sqrt() / 1.25f64.sqrt());
        let last_cell_only = (3.0f64 * 0.0).sqrt();
        assert!((up.omega - last_cell_only).abs() > 0.5);
        // And with a non-unit gamma (gamma = 2): terms 3/7, 1/3, 0.
        let up = update_group(
            2.0,
            &[1.0, 0.0, 0.0],
            &[3.0, 1.0, 0.0],
            1.0,
            NegativeCurvature::Reject,
        )
        .unwrap();
        assert_close!(up.omega, (3.0f64 / 7.0 + 1.0 / 3.0).sqrt());
        assert_close!(up.cells[0].c, 1.0 / (0.5 + 3.0));
    }

    #[test]
    fn parent_collapse_zeroes_all_children() {
        let space = tiny_space();
        let mut prior = Prior::new(&space).unwrap();
        let mut st = prior.stats_template(CellType::Normal, 2);
        for g in 0..st.n_groups() {
            let kind = GroupKind::from_index(g, 2);
            for c in 0..2 {
                // Parent of edge 0 has zero switches: dead.
                let s = if kind == P0 { 0.0 } else { 0.7 };
                st.set(kind, c, s, 0.3).unwrap();
            }
        }
        let red = prior.stats_template(CellType::Reduce, 0);
        prior.update(&st, &red, &UpdateConfig::new(0.01)).unwrap();
        let cell = prior.cell(CellType::Normal);
        assert_eq!(cell.edges[0].parent.gamma, 0.0);
        for c in &cell.edges[0].children {
            assert!(c.group.gamma > 0.0);
            assert_eq!(c.gamma_tilde, 0.0);
        }
        for c in &cell.edges[1].children {
            assert!(c.gamma_tilde > 0.0);
        }
        // A second round from a dead parent stays finite (C = 0, omega term = H).
        prior.update(&st, &red, &UpdateConfig::new(0.01)).unwrap();
        let cell = prior.cell(CellType::Normal);
        assert_eq!(cell.edges[0].parent.cells[0].c, 0.0);
        assert_eq!(cell.edges[0].children[1].gamma_tilde, 0.0);
    }

    #[test]
    fn edge_cases_stay_finite() {
        // Zero curvature everywhere: gamma kept, omega 0.
        let up = update_group(
            0.3,
            &[1.0, 2.0],
            &[0.0, 0.0],
            0.01,
            NegativeCurvature::Reject,
        )
        .unwrap();
        assert_eq!(up.status, GroupStatus::NoCurvature);
        assert_eq!(up.gamma, None);
        assert_eq!(up.omega, 0.0);
        // Zero switches and zero curvature: dead wins over no curvature.
        let up = update_group(
            0.3,
            &[0.0, 0.0],
            &[0.0, 0.0],
            0.01,
            NegativeCurvature::Reject,
        )
        .unwrap();
        assert_eq!(up.status, GroupStatus::Dead);
        assert_eq!(up.gamma, Some(0.0));
        // Prior gamma 0.
        let up = update_group(0.0, &[1.0], &[2.0], 1.0, NegativeCurvature::Reject).unwrap();
        assert_eq!(up.cells[0].c, 0.0);
        assert_close!(up.omega, 2f64.sqrt());
        // Huge and tiny values.
        let up = update_group(
            1e300,
            &[1e200, 1e200],
            &[1e-300, 1e300],
            1e-3,
            NegativeCurvature::Reject,
        )
        .unwrap();
        assert!(up.omega.is_finite());
        assert!(up.gamma.is_none_or(f64::is_finite));
        for c in &up.cells {
            assert!(c.c.is_finite() && c.big_h.is_finite());
        }
        // Empty group (no cells): dead, finite.
        let up = update_group(1.0, &[], &[], 1.0, NegativeCurvature::Reject).unwrap();
        assert_eq!(up.status, GroupStatus::Dead);
        // Bad inputs are errors, not panics.
        assert!(update_group(1.0, &[f64::NAN], &[1.0], 1.0, NegativeCurvature::Reject).is_err());
        assert!(update_group(
            1.0,
            &[1.0],
            &[f64::INFINITY],
            1.0,
            NegativeCurvature::Reject
        )
        .is_err());
        assert!(update_group(1.0, &[1.0], &[1.0], 0.0, NegativeCurvature::Reject).is_err());
        assert!(update_group(1.0, &[1.0], &[1.0, 2.0], 1.0, NegativeCurvature::Reject).is_err());
        assert!(matches!(
            update_group(1.0, &[1.0], &[-1e-9], 1.0, NegativeCurvature::Reject),
            Err(BayesError::NegativeCurvature { .. })
        ));
        let up = update_group(1.0, &[1.0], &[-1e-9], 1.0, NegativeCurvature::ClampToZero).unwrap();
        assert_eq!(up.clamped, 1);
        assert_eq!(up.status, GroupStatus::NoCurvature);
    }

    #[test]
    fn failed_update_leaves_prior_unchanged() {
        let space = SearchSpace::bayesnas();
        let mut prior = Prior::new(&space).unwrap();
        let before = prior.clone();
        let mut n = prior.stats_template(CellType::Normal, 6);
        let r = prior.stats_template(CellType::Reduce, 2);
        n.set(GroupKind::Child { edge: 7, op: 6 }, 5, 1.0, f64::NAN)
            .unwrap();
        let err = prior.update(&n, &r, &UpdateConfig::new(0.005)).unwrap_err();
        assert!(err.to_string().contains("edge 7 op skip_connect"), "{err}");
        assert_eq!(prior, before);
        // Wrong shape.
        let wrong = CellTypeStats::zeros(14, 7, 6);
        assert!(matches!(
            prior.update(&wrong, &r, &UpdateConfig::new(0.005)),
            Err(BayesError::Shape { .. })
        ));
        assert!(prior
            .update(&r.clone(), &r, &UpdateConfig::new(-1.0))
            .is_err());
        // Unknown group.
        assert!(prior
            .omega_for_penalty(GroupId {
                cell_type: CellType::Reduce,
                kind: GroupKind::Child { edge: 8, op: 0 }
            })
            .is_err());
        assert!(n
            .set(GroupKind::Child { edge: 0, op: 7 }, 0, 1.0, 1.0)
            .is_err());
        assert!(n.set(GroupKind::Parent { edge: 0 }, 6, 1.0, 1.0).is_err());
    }

    #[test]
    fn initial_prior_and_penalty() {
        let space = SearchSpace::bayesnas();
        let prior = Prior::new(&space).unwrap();
        assert!(prior.omegas(CellType::Normal).iter().all(|&w| w == 1.0));
        assert!(prior
            .gammas_in_force(CellType::Reduce)
            .iter()
            .all(|&g| g == 1.0));
        assert_eq!(prior.omegas(CellType::Normal).len(), 8 * 8);
        let mut n = prior.stats_template(CellType::Normal, 2);
        let r = prior.stats_template(CellType::Reduce, 1);
        // ||(3,4)|| = 5 on one parent group and 1 on a child: 0.1*5 + 0.2*1 = 0.7.
        n.set(GroupKind::Parent { edge: 2 }, 0, 3.0, 0.0).unwrap();
        n.set(GroupKind::Parent { edge: 2 }, 1, 4.0, 0.0).unwrap();
        n.set(GroupKind::Child { edge: 3, op: 1 }, 1, -1.0, 0.0)
            .unwrap();
        assert_close!(prior.penalty(&n, &r, 0.1, 0.2).unwrap(), 0.7);
    }

    #[test]
    fn prior_serde_round_trip() {
        let prior = Prior::new(&SearchSpace::darts()).unwrap();
        let json = serde_json::to_string(&prior).unwrap();
        let back: Prior = serde_json::from_str(&json).unwrap();
        assert_eq!(back, prior);
        back.validate().unwrap();
    }
}
