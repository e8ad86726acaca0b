//! Deriving a cell from the relevances (method note, section 8).
//!
//! Two rules:
//!
//! * [`derive_threshold`] (BayesNAS): keep op `k` of edge `e` iff `gamma_tilde_k >= tau *
//!   max gamma_tilde` of the cell type, drop edge `e` iff `gamma0_e < tau * max gamma0`, then
//!   repair (see below). Several ops per edge and missing edges are allowed.
//! * [`derive_darts`] (DARTS): every intermediate node keeps its top-2 incoming edges ranked by
//!   their best `gamma_tilde`, with one op each (the best), so the result fits a DARTS
//!   `Genotype(...)` string.
//!
//! # Threshold rule: exact semantics
//!
//! 1. `tau` must be in `[0, 1]`. With `tau = 0` every edge and op is kept (the full supernet).
//!    With `tau > 0` a group whose relevance is exactly 0 (a dead group, see
//!    [`crate::bayes`]) is never kept by the threshold, even when the whole cell type is dead.
//! 2. **Op repair.** An edge that passes the edge threshold but none of whose ops passes the op
//!    threshold keeps its single most relevant op (this is how this crate reads the note's "a
//!    node with nothing left keeps its single most relevant op": the parent switch says the
//!    connection matters, so it carries its best op). If even that op has relevance 0 (every
//!    child switch was zero), the edge computes nothing and is dropped.
//! 3. **Node repair**, to a fixed point: an intermediate node with no remaining incoming edge
//!    from an input or from a live node is removed, together with its outgoing edges and its
//!    slot in the concat. Removing a node can starve a later node, so this repeats until
//!    nothing changes.
//! 4. **Non-empty output.** If every node died, the cell keeps the single most relevant
//!    (edge, op) pair among the edges that leave an input (those reach a node with one edge:
//!    the cheapest reachable node), ranked by `gamma_tilde`, then `gamma0`, then edge order.
//!
//! Kept edges are sorted by target node, then source (`in0, in1, n0, ...`); the ops of an edge
//! by decreasing relevance (ties: op order). Every step is recorded as a [`Repair`].
//!
//! # Relevance in the genotype
//!
//! The `relevance` of a kept op is `gamma_tilde_k / max gamma_tilde` over the cell type, in
//! `[0, 1]` (0 when every group of the cell type is dead), so the threshold rule reads "keep
//! iff relevance >= tau".

use serde::{Deserialize, Serialize};

use crate::bayes::Prior;
use crate::genotype::{CellGenotype, Genotype, KeptEdge, KeptOp};
use crate::space::{CellType, Edge, Node, Op, NUM_INTERMEDIATE};

/// Errors of the derivation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeriveError {
    /// `tau` outside `[0, 1]` or not finite.
    #[error("tau must be in [0, 1], got {0}")]
    BadTau(f64),
    /// Relevances inconsistent with the edges/ops.
    #[error("{cell} relevances: {msg}")]
    Shape {
        /// Cell type (as far as known).
        cell: String,
        /// What is wrong.
        msg: String,
    },
    /// A negative or non-finite relevance.
    #[error("{cell} relevances: {what} of edge {edge} is {value} (must be finite and >= 0)")]
    BadValue {
        /// Cell type (as far as known).
        cell: String,
        /// `gamma0` or `gamma_tilde[op]`.
        what: String,
        /// Edge index.
        edge: usize,
        /// The value.
        value: f64,
    },
    /// Every node died and no edge leaves an input, so no cell output can be formed.
    #[error("{cell}: every node was removed and no edge leaves an input (empty cell output)")]
    EmptyCell {
        /// Cell type (as far as known).
        cell: String,
    },
}

/// The relevances of one cell type: the derivation's input (see [`Prior::cell_relevance`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRelevance {
    /// The edges of the cell type, in the space's order.
    pub edges: Vec<Edge>,
    /// Candidate operations, in the space's order.
    pub ops: Vec<Op>,
    /// `gamma0_e` per edge.
    pub gamma0: Vec<f64>,
    /// `gamma_tilde_{e,k}` per edge, per op.
    pub gamma_tilde: Vec<Vec<f64>>,
}

impl CellRelevance {
    /// Checks shapes, edges, and that every value is finite and `>= 0`.
    pub fn validate(&self, cell: &str) -> Result<(), DeriveError> {
        let shape = |msg: String| DeriveError::Shape {
            cell: cell.to_string(),
            msg,
        };
        if self.ops.is_empty() {
            return Err(shape("no operations".into()));
        }
        if self.gamma0.len() != self.edges.len() || self.gamma_tilde.len() != self.edges.len() {
            return Err(shape(format!(
                "{} edges but {} gamma0 and {} gamma_tilde rows",
                self.edges.len(),
                self.gamma0.len(),
                self.gamma_tilde.len()
            )));
        }
        for (e, edge) in self.edges.iter().enumerate() {
            edge.validate().map_err(|err| shape(err.to_string()))?;
            if self.edges[..e].contains(edge) {
                return Err(shape(format!("edge {edge} listed twice")));
            }
            if self.gamma_tilde[e].len() != self.ops.len() {
                return Err(shape(format!(
                    "edge {e} has {} gamma_tilde values for {} ops",
                    self.gamma_tilde[e].len(),
                    self.ops.len()
                )));
            }
            let bad = |what: String, value: f64| DeriveError::BadValue {
                cell: cell.to_string(),
                what,
                edge: e,
                value,
            };
            let g0 = self.gamma0[e];
            if !(g0.is_finite() && g0 >= 0.0) {
                return Err(bad("gamma0".into(), g0));
            }
            for (k, &g) in self.gamma_tilde[e].iter().enumerate() {
                if !(g.is_finite() && g >= 0.0) {
                    return Err(bad(format!("gamma_tilde[{}]", self.ops[k]), g));
                }
            }
        }
        Ok(())
    }

    fn max_gamma_tilde(&self) -> f64 {
        self.gamma_tilde
            .iter()
            .flatten()
            .fold(0.0f64, |m, &g| m.max(g))
    }

    fn max_gamma0(&self) -> f64 {
        self.gamma0.iter().fold(0.0f64, |m, &g| m.max(g))
    }

    /// Index of the best op of edge `e` (largest gamma_tilde; ties: first in op order).
    pub fn best_op(&self, e: usize) -> usize {
        let row = &self.gamma_tilde[e];
        let mut best = 0;
        for (k, &g) in row.iter().enumerate() {
            if g > row[best] {
                best = k;
            }
        }
        best
    }

    fn relevance(&self, e: usize, k: usize, scope: OpScope) -> f64 {
        let max = match scope {
            OpScope::Cell => self.max_gamma_tilde(),
            OpScope::Edge => self.gamma_tilde[e][self.best_op(e)],
        };
        if max > 0.0 {
            self.gamma_tilde[e][k] / max
        } else {
            0.0
        }
    }
}

/// What an op's relevance is compared with by the threshold rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpScope {
    /// The largest `gamma_tilde` of the whole cell type (method note, section 8). The op test
    /// then also acts as a second edge test.
    #[default]
    Cell,
    /// The largest `gamma_tilde` of the op's own edge: the edge test decides which edges stay,
    /// the op test only which of the edge's ops do.
    Edge,
}

/// What the derivation does with an intermediate node that lost every input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRepair {
    /// Remove it with its outgoing edges and its concat slot (method note, section 8).
    #[default]
    Remove,
    /// Give it back its strongest incoming edge (ranked by the edge's best `gamma_tilde`;
    /// sources must be inputs or live nodes) with that edge's best op, so that every
    /// intermediate node keeps at least one input. A node is removed only when every
    /// candidate edge has relevance 0.
    KeepBestInput,
}

/// Options of the cell rules shared by every derivation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CellRules {
    /// Scope of the op threshold (threshold rule only).
    pub op_scope: OpScope,
    /// Treatment of nodes without inputs.
    pub node_repair: NodeRepair,
    /// At most this many parameter-free ops (pools, skip) kept in the cell, P-DARTS style
    /// (Chen et al. 2019 cap the skip connections of the normal cell); `None`: no cap.
    /// [`derive_from`] applies it to the normal cell only.
    #[serde(default)]
    pub max_param_free: Option<usize>,
}

/// Which derivation rule to apply.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum DeriveRule {
    /// The BayesNAS threshold rule with parameter `tau` in `[0, 1]`.
    Threshold {
        /// Relative threshold.
        tau: f64,
    },
    /// DARTS' top-2 rule.
    Darts,
}

/// A repair step taken by a derivation (for logs and reports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "repair", rename_all = "snake_case")]
pub enum Repair {
    /// A kept edge had no op over the threshold and kept its best op.
    OpRestored {
        /// The edge.
        edge: Edge,
        /// The op it kept.
        op: Op,
    },
    /// A kept edge had no op over the threshold and its best op has relevance 0: dropped.
    EdgeWithoutOps {
        /// The edge.
        edge: Edge,
    },
    /// An intermediate node lost all its inputs and was removed.
    NodeRemoved {
        /// The node index.
        node: usize,
        /// Its outgoing edges that were dropped with it.
        dropped: Vec<Edge>,
    },
    /// An intermediate node lost every input and got back its strongest incoming edge
    /// ([`NodeRepair::KeepBestInput`]).
    InputRestored {
        /// The edge.
        edge: Edge,
        /// Its best op, the one kept.
        op: Op,
    },
    /// The parameter-free cap ([`CellRules::max_param_free`]) removed `removed` from the edge
    /// and, when it was the edge's only op, put the edge's best parametric op `added` in its
    /// place.
    ParamFreeCapped {
        /// The edge.
        edge: Edge,
        /// The parameter-free op taken out.
        removed: Op,
        /// Its replacement, if the edge would otherwise be empty.
        added: Option<Op>,
    },
    /// Every node died; this edge and op were kept so that the cell output is not empty.
    Fallback {
        /// The edge.
        edge: Edge,
        /// The op.
        op: Op,
    },
}

/// A derived cell and the repairs made.
#[derive(Debug, Clone, PartialEq)]
pub struct CellDerivation {
    /// The cell.
    pub genotype: CellGenotype,
    /// Repairs, in the order they were made.
    pub repairs: Vec<Repair>,
}

/// A derived genotype and the repairs made per cell type.
#[derive(Debug, Clone, PartialEq)]
pub struct Derivation {
    /// The genotype.
    pub genotype: Genotype,
    /// Repairs in the normal cell.
    pub normal_repairs: Vec<Repair>,
    /// Repairs in the reduction cell.
    pub reduce_repairs: Vec<Repair>,
}

/// Kept ops per space edge; an empty list means the edge is not kept.
type Selection = Vec<Vec<usize>>;

/// Applies the parameter-free cap to a selection: while more than `cap` parameter-free ops
/// are kept, the cheapest change is made, where the cost is the score given up: dropping a
/// parameter-free op from an edge that keeps other ops costs its score; on an edge where it is
/// the only op, replacing it with the edge's best parametric op costs the difference (edges
/// without a parametric candidate are left alone). Ties: space order.
fn cap_param_free(rel: &CellRelevance, sel: &mut Selection, cap: usize, repairs: &mut Vec<Repair>) {
    loop {
        let kept_free = sel
            .iter()
            .flatten()
            .filter(|&&k| rel.ops[k].is_parameter_free())
            .count();
        if kept_free <= cap {
            return;
        }
        let mut best: Option<(f64, usize, usize, Option<usize>)> = None;
        for (e, ops) in sel.iter().enumerate() {
            for &k in ops.iter().filter(|&&k| rel.ops[k].is_parameter_free()) {
                let score = rel.gamma_tilde[e][k];
                let (cost, add) = if ops.len() > 1 {
                    (score, None)
                } else {
                    let alt = (0..rel.ops.len())
                        .filter(|&j| !rel.ops[j].is_parameter_free())
                        .fold(None, |b: Option<usize>, j| match b {
                            Some(b) if rel.gamma_tilde[e][b] >= rel.gamma_tilde[e][j] => Some(b),
                            _ => Some(j),
                        });
                    match alt {
                        Some(j) => (score - rel.gamma_tilde[e][j], Some(j)),
                        None => continue,
                    }
                };
                if best.is_none_or(|(c, ..)| cost < c) {
                    best = Some((cost, e, k, add));
                }
            }
        }
        let Some((_, e, k, add)) = best else { return };
        sel[e].retain(|&j| j != k);
        if let Some(j) = add {
            sel[e].push(j);
        }
        repairs.push(Repair::ParamFreeCapped {
            edge: rel.edges[e],
            removed: rel.ops[k],
            added: add.map(|j| rel.ops[j]),
        });
    }
}

/// Node repair to a fixed point, then assembly. `order` lists the kept edges' output order.
fn assemble(
    rel: &CellRelevance,
    mut sel: Selection,
    mut order: Vec<usize>,
    rules: CellRules,
    repairs: &mut Vec<Repair>,
    cell: &str,
) -> Result<CellGenotype, DeriveError> {
    let mut alive = [true; NUM_INTERMEDIATE];
    loop {
        let mut changed = false;
        for j in 0..NUM_INTERMEDIATE {
            if !alive[j] {
                continue;
            }
            let fed = rel.edges.iter().enumerate().any(|(e, edge)| {
                edge.to == j
                    && !sel[e].is_empty()
                    && edge.from.intermediate().is_none_or(|i| alive[i])
            });
            if !fed && rules.node_repair == NodeRepair::KeepBestInput {
                // Strongest incoming edge from an input or a live node (ties: space order).
                let strength = |e: usize| rel.gamma_tilde[e][rel.best_op(e)];
                let best = (0..rel.edges.len())
                    .filter(|&e| {
                        rel.edges[e].to == j
                            && rel.edges[e].from.intermediate().is_none_or(|i| alive[i])
                            && strength(e) > 0.0
                    })
                    .fold(None, |b: Option<usize>, e| match b {
                        Some(b) if strength(b) >= strength(e) => Some(b),
                        _ => Some(e),
                    });
                if let Some(e) = best {
                    let k = rel.best_op(e);
                    sel[e] = vec![k];
                    if !order.contains(&e) {
                        order.push(e);
                    }
                    repairs.push(Repair::InputRestored {
                        edge: rel.edges[e],
                        op: rel.ops[k],
                    });
                    changed = true;
                    continue;
                }
            }
            if !fed {
                alive[j] = false;
                changed = true;
                let mut dropped = Vec::new();
                for (e, edge) in rel.edges.iter().enumerate() {
                    let touches = edge.to == j || edge.from == Node::Inter(j);
                    if touches && !sel[e].is_empty() {
                        sel[e].clear();
                        if edge.from == Node::Inter(j) {
                            dropped.push(*edge);
                        }
                    }
                }
                repairs.push(Repair::NodeRemoved { node: j, dropped });
            }
        }
        if !changed {
            break;
        }
    }
    if !alive.iter().any(|&a| a) {
        // Fallback: most relevant (edge, op) among edges leaving an input.
        let mut best: Option<(usize, usize)> = None;
        for (e, edge) in rel.edges.iter().enumerate() {
            if !edge.from.is_input() {
                continue;
            }
            let k = rel.best_op(e);
            let better = match best {
                None => true,
                Some((be, bk)) => {
                    let (g, bg) = (rel.gamma_tilde[e][k], rel.gamma_tilde[be][bk]);
                    g > bg || (g == bg && rel.gamma0[e] > rel.gamma0[be])
                }
            };
            if better {
                best = Some((e, k));
            }
        }
        let (e, k) = best.ok_or(DeriveError::EmptyCell {
            cell: cell.to_string(),
        })?;
        sel[e] = vec![k];
        repairs.push(Repair::Fallback {
            edge: rel.edges[e],
            op: rel.ops[k],
        });
        return Ok(CellGenotype {
            edges: vec![kept_edge(rel, e, &sel[e], rules.op_scope)],
            concat: vec![rel.edges[e].to],
        });
    }
    let edges = order
        .into_iter()
        .filter(|&e| !sel[e].is_empty())
        .map(|e| kept_edge(rel, e, &sel[e], rules.op_scope))
        .collect();
    let concat = (0..NUM_INTERMEDIATE).filter(|&j| alive[j]).collect();
    Ok(CellGenotype { edges, concat })
}

fn kept_edge(rel: &CellRelevance, e: usize, ops: &[usize], scope: OpScope) -> KeptEdge {
    KeptEdge {
        from: rel.edges[e].from,
        to: rel.edges[e].to,
        ops: ops
            .iter()
            .map(|&k| KeptOp {
                op: rel.ops[k],
                relevance: Some(rel.relevance(e, k, scope)),
            })
            .collect(),
    }
}

/// The BayesNAS threshold rule with repair (see the module documentation). `cell` labels
/// errors (e.g. `"normal"`).
pub fn derive_threshold(
    rel: &CellRelevance,
    tau: f64,
    cell: &str,
) -> Result<CellDerivation, DeriveError> {
    derive_threshold_with(rel, tau, CellRules::default(), cell)
}

/// [`derive_threshold`] with the op scope and node repair of `rules`.
pub fn derive_threshold_with(
    rel: &CellRelevance,
    tau: f64,
    rules: CellRules,
    cell: &str,
) -> Result<CellDerivation, DeriveError> {
    if !(tau.is_finite() && (0.0..=1.0).contains(&tau)) {
        return Err(DeriveError::BadTau(tau));
    }
    rel.validate(cell)?;
    let passes = |x: f64, max: f64| tau == 0.0 || (x > 0.0 && x >= tau * max);
    let max_0 = rel.max_gamma0();
    let max_t = |e: usize| match rules.op_scope {
        OpScope::Cell => rel.max_gamma_tilde(),
        OpScope::Edge => rel.gamma_tilde[e][rel.best_op(e)],
    };
    let mut repairs = Vec::new();
    let mut sel: Selection = vec![Vec::new(); rel.edges.len()];
    for (e, edge) in rel.edges.iter().enumerate() {
        if !passes(rel.gamma0[e], max_0) {
            continue;
        }
        let mut ops: Vec<usize> = (0..rel.ops.len())
            .filter(|&k| passes(rel.gamma_tilde[e][k], max_t(e)))
            .collect();
        // Decreasing relevance; stable sort keeps op order on ties.
        ops.sort_by(|&a, &b| rel.gamma_tilde[e][b].total_cmp(&rel.gamma_tilde[e][a]));
        if ops.is_empty() {
            let k = rel.best_op(e);
            if rel.gamma_tilde[e][k] > 0.0 {
                ops.push(k);
                repairs.push(Repair::OpRestored {
                    edge: *edge,
                    op: rel.ops[k],
                });
            } else {
                repairs.push(Repair::EdgeWithoutOps { edge: *edge });
            }
        }
        sel[e] = ops;
    }
    if let Some(cap) = rules.max_param_free {
        cap_param_free(rel, &mut sel, cap, &mut repairs);
    }
    let mut order: Vec<usize> = (0..rel.edges.len()).collect();
    order.sort_by_key(|&e| (rel.edges[e].to, rel.edges[e].from));
    let genotype = assemble(rel, sel, order, rules, &mut repairs, cell)?;
    Ok(CellDerivation { genotype, repairs })
}

/// DARTS' rule: per node, the top-2 incoming edges by best `gamma_tilde` (ties: space order),
/// one op each (the best; ties: op order). Nodes with fewer than 2 incoming edges in the space
/// keep what they have. Edges are listed per node in rank order, as DARTS writes them.
pub fn derive_darts(rel: &CellRelevance, cell: &str) -> Result<CellDerivation, DeriveError> {
    derive_darts_with(rel, CellRules::default(), cell)
}

/// [`derive_darts`] with the node repair of `rules` (the op scope does not matter: one op per
/// edge, the edge's best).
pub fn derive_darts_with(
    rel: &CellRelevance,
    rules: CellRules,
    cell: &str,
) -> Result<CellDerivation, DeriveError> {
    rel.validate(cell)?;
    let mut sel: Selection = vec![Vec::new(); rel.edges.len()];
    let mut order = Vec::new();
    for j in 0..NUM_INTERMEDIATE {
        let mut incoming: Vec<usize> = (0..rel.edges.len())
            .filter(|&e| rel.edges[e].to == j)
            .collect();
        let strength = |e: usize| rel.gamma_tilde[e][rel.best_op(e)];
        incoming.sort_by(|&a, &b| strength(b).total_cmp(&strength(a)));
        for &e in incoming.iter().take(2) {
            sel[e] = vec![rel.best_op(e)];
            order.push(e);
        }
    }
    let mut repairs = Vec::new();
    if let Some(cap) = rules.max_param_free {
        cap_param_free(rel, &mut sel, cap, &mut repairs);
    }
    let genotype = assemble(rel, sel, order, rules, &mut repairs, cell)?;
    Ok(CellDerivation { genotype, repairs })
}

/// Derives both cell types of `prior` with `rule` (default [`CellRules`]: the method note's).
pub fn derive(prior: &Prior, rule: DeriveRule) -> Result<Derivation, DeriveError> {
    derive_with(prior, rule, CellRules::default())
}

/// Derives both cell types of `prior` with `rule` and `rules`.
pub fn derive_with(
    prior: &Prior,
    rule: DeriveRule,
    rules: CellRules,
) -> Result<Derivation, DeriveError> {
    derive_from(
        prior.space(),
        &prior.cell_relevance(CellType::Normal),
        &prior.cell_relevance(CellType::Reduce),
        rule,
        rules,
    )
}

/// Derives a genotype of `space` from explicit per-cell-type scores (for example the
/// perturbation scores of [`crate::searcher::Searcher::perturbation_scores`] in place of the
/// prior's relevances).
pub fn derive_from(
    space: &str,
    normal: &CellRelevance,
    reduce: &CellRelevance,
    rule: DeriveRule,
    rules: CellRules,
) -> Result<Derivation, DeriveError> {
    let one = |rel: &CellRelevance, ct: CellType, rules: CellRules| match rule {
        DeriveRule::Threshold { tau } => derive_threshold_with(rel, tau, rules, ct.name()),
        DeriveRule::Darts => derive_darts_with(rel, rules, ct.name()),
    };
    let normal = one(normal, CellType::Normal, rules)?;
    let reduce = one(
        reduce,
        CellType::Reduce,
        CellRules {
            max_param_free: None,
            ..rules
        },
    )?;
    Ok(Derivation {
        genotype: Genotype {
            space: space.to_string(),
            normal: normal.genotype,
            reduce: reduce.genotype,
        },
        normal_repairs: normal.repairs,
        reduce_repairs: reduce.repairs,
    })
}

#[cfg(test)]
mod tests;
