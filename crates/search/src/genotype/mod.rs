//! Derived cells ("genotypes"): validation, JSON I/O and DARTS genotype strings.
//!
//! # JSON schema (`genotype.json`, also documented in `docs/genotype.md`)
//!
//! ```json
//! {
//!   "format": "bayesnas-genotype",
//!   "version": 1,
//!   "space": "bayesnas",
//!   "normal": {
//!     "edges": [
//!       {"from": "in0", "to": "n0", "ops": [{"op": "sep_conv_3x3", "relevance": 0.93}]}
//!     ],
//!     "concat": ["n0"]
//!   },
//!   "reduce": {"edges": [], "concat": []},
//!   "darts": "Genotype(normal=[...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[...])"
//! }
//! ```
//!
//! * `from`: `in0` (previous cell, `c_{k-1}`), `in1` (`c_{k-2}`) or `n0`..`n3`, earlier than
//!   `to`; `to`: `n0`..`n3`.
//! * `ops`: non-empty, no repeated op; `relevance` is a number `>= 0` or `null`/absent
//!   (unknown, e.g. imported from a DARTS string). Derived genotypes write
//!   `gamma_tilde / max gamma_tilde` of the cell type.
//! * `concat`: the intermediate nodes concatenated into the cell output, in channel order.
//! * `darts`: the DARTS string of the same genotype, or `null` when it does not fit that
//!   format. Written for convenience; on reading it must be `null` or describe the same
//!   (node, input, op) pairs as the cells.
//! * Unknown keys are errors (typos must not pass silently).
//!
//! A cell is valid when every edge is well formed, no (from, to) pair repeats, every node
//! used as a source or listed in `concat` has an incoming edge, every node with an incoming
//! edge is used (in `concat` or as a source), and `concat` is non-empty without repeats. When
//! `space` names a built-in space, every edge must belong to it.
//!
//! # DARTS strings
//!
//! `Genotype(normal=[('sep_conv_3x3', 1), ...], normal_concat=[2, 3, 4, 5], reduce=[...],
//! reduce_concat=range(2, 6))`: pairs `(op, input)` two per intermediate node, input in DARTS
//! numbering (`0` = our `in1`, `1` = our `in0`, `k >= 2` = `n(k-2)`; see [`crate::space`]).
//!
//! This module holds the model and its validation; `json.rs` the JSON reader and writer (and
//! the serde impls), `darts.rs` the DARTS string printer, lexer and parser.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::space::{CellType, Node, Op, SearchSpace, NUM_INTERMEDIATE};

mod darts;
mod json;

/// The `format` value of genotype JSON files.
pub const FORMAT: &str = "bayesnas-genotype";
/// The schema version this build reads and writes.
pub const VERSION: u64 = 1;

/// DARTS' published second-order cell (DARTS_V2 in its `genotypes.py`).
pub const DARTS_V2: &str = "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), \
('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), \
('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], \
reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), \
('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], \
reduce_concat=[2, 3, 4, 5])";

/// Errors of genotype validation and I/O.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenotypeError {
    /// The text is not JSON.
    #[error("genotype JSON syntax: {0}")]
    Json(String),
    /// A field is missing, of the wrong type, or has an invalid value. `path` is like
    /// `normal.edges[2].ops[0].op`.
    #[error("{path}: {msg}")]
    Field {
        /// Where in the document.
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// A DARTS genotype string that does not parse. `pos` is a 0-based character offset.
    #[error("DARTS genotype string, at character {pos}: {msg}")]
    Darts {
        /// Character offset.
        pos: usize,
        /// What is wrong.
        msg: String,
    },
}

fn field_err(path: impl Into<String>, msg: impl Into<String>) -> GenotypeError {
    GenotypeError::Field {
        path: path.into(),
        msg: msg.into(),
    }
}

/// One kept operation of an edge.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KeptOp {
    /// The operation.
    pub op: Op,
    /// Normalised relevance in `[0, 1]` (see [`crate::derive`](mod@crate::derive)), `None` if unknown.
    pub relevance: Option<f64>,
}

/// A kept edge with one or more operations (summed, like the supernet edge).
#[derive(Debug, Clone, PartialEq)]
pub struct KeptEdge {
    /// Source node.
    pub from: Node,
    /// Target intermediate node index.
    pub to: usize,
    /// Kept operations (non-empty).
    pub ops: Vec<KeptOp>,
}

/// One derived cell.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CellGenotype {
    /// Kept edges.
    pub edges: Vec<KeptEdge>,
    /// Intermediate nodes concatenated into the output, in channel order.
    pub concat: Vec<usize>,
}

/// A derived architecture: one normal and one reduction cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Genotype {
    /// Name of the search space it was derived in (`"darts"` for imported DARTS strings).
    pub space: String,
    /// The normal cell.
    pub normal: CellGenotype,
    /// The reduction cell.
    pub reduce: CellGenotype,
}

impl CellGenotype {
    /// The edges into intermediate node `to`.
    pub fn incoming(&self, to: usize) -> impl Iterator<Item = &KeptEdge> + '_ {
        self.edges.iter().filter(move |e| e.to == to)
    }

    /// Nodes that have at least one incoming edge.
    pub fn live_nodes(&self) -> BTreeSet<usize> {
        self.edges.iter().map(|e| e.to).collect()
    }

    /// Total number of (edge, op) pairs.
    pub fn n_pairs(&self) -> usize {
        self.edges.iter().map(|e| e.ops.len()).sum()
    }

    /// Checks the cell (see the module documentation). `prefix` starts error paths
    /// (e.g. `"normal"`).
    pub fn validate(&self, prefix: &str) -> Result<(), GenotypeError> {
        for (i, e) in self.edges.iter().enumerate() {
            let p = format!("{prefix}.edges[{i}]");
            if e.to >= NUM_INTERMEDIATE {
                return Err(field_err(
                    format!("{p}.to"),
                    format!(
                        "node n{} does not exist (n0..n{})",
                        e.to,
                        NUM_INTERMEDIATE - 1
                    ),
                ));
            }
            match e.from {
                Node::Inter(j) if j >= NUM_INTERMEDIATE => {
                    return Err(field_err(
                        format!("{p}.from"),
                        format!("node n{j} does not exist (n0..n{})", NUM_INTERMEDIATE - 1),
                    ))
                }
                Node::Inter(j) if j >= e.to => {
                    return Err(field_err(
                        format!("{p}.from"),
                        format!(
                            "edge n{j}->n{} goes from a node to an earlier one or itself \
                             (edges must go from an input or an earlier node)",
                            e.to
                        ),
                    ))
                }
                _ => {}
            }
            if self.edges[..i]
                .iter()
                .any(|o| o.from == e.from && o.to == e.to)
            {
                return Err(field_err(
                    p,
                    format!(
                        "edge {}->n{} appears twice (list its ops in one edge)",
                        e.from, e.to
                    ),
                ));
            }
            if e.ops.is_empty() {
                return Err(field_err(
                    format!("{p}.ops"),
                    "an edge needs at least one op",
                ));
            }
            for (k, o) in e.ops.iter().enumerate() {
                if e.ops[..k].iter().any(|x| x.op == o.op) {
                    return Err(field_err(
                        format!("{p}.ops[{k}].op"),
                        format!("{} listed twice on this edge", o.op),
                    ));
                }
                if let Some(r) = o.relevance {
                    if !(r.is_finite() && r >= 0.0) {
                        return Err(field_err(
                            format!("{p}.ops[{k}].relevance"),
                            format!("must be a finite number >= 0, got {r}"),
                        ));
                    }
                }
            }
        }
        let live = self.live_nodes();
        for (i, e) in self.edges.iter().enumerate() {
            if let Node::Inter(j) = e.from {
                if !live.contains(&j) {
                    return Err(field_err(
                        format!("{prefix}.edges[{i}].from"),
                        format!("node n{j} is used as a source but has no incoming edge"),
                    ));
                }
            }
        }
        if self.concat.is_empty() {
            return Err(field_err(
                format!("{prefix}.concat"),
                "must list at least one node (the cell output would be empty)",
            ));
        }
        for (i, &j) in self.concat.iter().enumerate() {
            let p = format!("{prefix}.concat[{i}]");
            if j >= NUM_INTERMEDIATE {
                return Err(field_err(
                    p,
                    format!("node n{j} does not exist (n0..n{})", NUM_INTERMEDIATE - 1),
                ));
            }
            if self.concat[..i].contains(&j) {
                return Err(field_err(p, format!("n{j} listed twice")));
            }
            if !live.contains(&j) {
                return Err(field_err(p, format!("node n{j} has no incoming edge")));
            }
        }
        for &j in &live {
            let used =
                self.concat.contains(&j) || self.edges.iter().any(|e| e.from == Node::Inter(j));
            if !used {
                return Err(field_err(
                    format!("{prefix}.concat"),
                    format!(
                        "node n{j} has inputs but is neither in concat nor used by a later node"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Sorted (to, from, op) triples: the cell's structure without order or relevance.
    fn structure(&self) -> Vec<(usize, Node, Op)> {
        let mut v: Vec<_> = self
            .edges
            .iter()
            .flat_map(|e| e.ops.iter().map(move |o| (e.to, e.from, o.op)))
            .collect();
        v.sort();
        v
    }
}

impl Genotype {
    /// The cell of one type.
    pub fn cell(&self, cell_type: CellType) -> &CellGenotype {
        match cell_type {
            CellType::Normal => &self.normal,
            CellType::Reduce => &self.reduce,
        }
    }

    /// Validates both cells and, for a built-in `space`, that every edge is in that space.
    pub fn validate(&self) -> Result<(), GenotypeError> {
        if self.space.is_empty() {
            return Err(field_err("space", "must not be empty"));
        }
        let space = SearchSpace::by_name(&self.space).ok();
        for ct in CellType::ALL {
            let cell = self.cell(ct);
            cell.validate(ct.name())?;
            if let Some(space) = &space {
                for (i, e) in cell.edges.iter().enumerate() {
                    let edge = crate::space::Edge::new(e.from, e.to);
                    if space.edge_index(ct, edge).is_none() {
                        return Err(field_err(
                            format!("{ct}.edges[{i}]"),
                            format!(
                                "edge {edge} is not in the {ct} cells of space '{}'",
                                space.name
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
