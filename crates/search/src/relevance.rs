//! `relevance.json`: a serialisable report of the prior after an update, per cell type and
//! group, with the per-cell quantities of the last update.
//!
//! ```json
//! {
//!   "format": "bayesnas-relevance", "version": 1, "space": "bayesnas",
//!   "ops": ["sep_conv_3x3", ...], "rounds": 1, "lambda_parent": 0.005, "lambda_child": 0.005,
//!   "normal": {
//!     "cell_type": "normal", "n_cells": 6, "max_gamma0": 4.1, "max_gamma_tilde": 1.3,
//!     "groups": [
//!       {"index": 0, "kind": "parent", "edge": 0, "from": "in0", "to": "n0", "op": null,
//!        "gamma": 4.1, "omega": 0.8, "gamma_tilde": null, "relevance": 1.0,
//!        "status": "updated",
//!        "cells": [{"cell": 0, "network_cell": 0, "s": 0.93, "h": 0.002, "H": 0.4, "C": 0.63}]}
//!     ]
//!   },
//!   "reduce": { ... }
//! }
//! ```
//!
//! * `index`: flat group index within the cell type ([`crate::bayes::GroupKind::index`]).
//! * `gamma`: `gamma0` for a parent, the raw `gamma_k` for a child; `gamma_tilde` (children
//!   only) is the combined, effective relevance.
//! * `relevance`: `gamma_tilde / max_gamma_tilde` for a child, `gamma0 / max_gamma0` for a
//!   parent (0 when the maximum is 0): the quantity the threshold rule compares with `tau`.
//! * `cells[].cell`: position among the cells of that type in network order;
//!   `network_cell`: index in the whole network when the layout is known
//!   ([`RelevanceReport::set_network_layout`]), else `null`. `h` is the raw curvature, `H` =
//!   `h / lambda`, `C` the posterior variance. `cells` is empty before the first update.

use serde::{Deserialize, Serialize};

use crate::bayes::{CellPrior, GroupKind, GroupState, GroupStatus, Prior};
use crate::space::{reduction_cells, CellType, Node, Op};

/// The `format` value of relevance files.
pub const FORMAT: &str = "bayesnas-relevance";
/// The schema version written and read.
pub const VERSION: u64 = 1;

/// Errors reading or completing a relevance report.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RelevanceError {
    /// Not valid JSON for the schema (serde's message names the field).
    #[error("relevance JSON: {0}")]
    Json(String),
    /// Wrong `format` or `version`.
    #[error("relevance JSON: {0}")]
    Format(String),
    /// A network layout that does not match the cell counts of the report.
    #[error("network of {n_cells} cells has {normal} normal and {reduce} reduction cells, the report has {have_normal} and {have_reduce}")]
    Layout {
        /// Total cells given.
        n_cells: usize,
        /// Normal cells in that layout.
        normal: usize,
        /// Reduction cells in that layout.
        reduce: usize,
        /// Normal cells in the report.
        have_normal: usize,
        /// Reduction cells in the report.
        have_reduce: usize,
    },
}

/// Whether a group is an edge (parent) or an operation (child) group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupRole {
    /// Edge switch group.
    Parent,
    /// Operation switch group.
    Child,
}

/// Per-cell values of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellReport {
    /// Position among the cells of this type, in network order.
    pub cell: usize,
    /// Index in the whole network, when known.
    pub network_cell: Option<usize>,
    /// Switch value.
    pub s: f64,
    /// Raw curvature.
    pub h: f64,
    /// `h / lambda`.
    #[serde(rename = "H")]
    pub big_h: f64,
    /// Posterior variance.
    #[serde(rename = "C")]
    pub c: f64,
}

/// One group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// Flat group index within the cell type.
    pub index: usize,
    /// Parent or child.
    pub kind: GroupRole,
    /// Edge index.
    pub edge: usize,
    /// Edge source.
    pub from: Node,
    /// Edge target.
    pub to: Node,
    /// The op of a child group.
    pub op: Option<Op>,
    /// `gamma0` (parent) or raw `gamma_k` (child).
    pub gamma: f64,
    /// omega.
    pub omega: f64,
    /// Combined relevance (children only).
    pub gamma_tilde: Option<f64>,
    /// Normalised relevance in `[0, 1]`.
    pub relevance: f64,
    /// What the last update did.
    pub status: GroupStatus,
    /// Per-cell values of the last update.
    pub cells: Vec<CellReport>,
}

/// All groups of one cell type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellTypeReport {
    /// Cell type.
    pub cell_type: CellType,
    /// Cells of this type in the last update.
    pub n_cells: usize,
    /// Largest `gamma0`.
    pub max_gamma0: f64,
    /// Largest `gamma_tilde`.
    pub max_gamma_tilde: f64,
    /// Groups in flat layout order (edge by edge, parent first).
    pub groups: Vec<GroupReport>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelevanceReport {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u64,
    /// Search space name.
    pub space: String,
    /// Candidate operations.
    pub ops: Vec<Op>,
    /// Updates applied so far.
    pub rounds: usize,
    /// lambda of parent groups in the last update.
    pub lambda_parent: Option<f64>,
    /// lambda of child groups in the last update.
    pub lambda_child: Option<f64>,
    /// Normal cells.
    pub normal: CellTypeReport,
    /// Reduction cells.
    pub reduce: CellTypeReport,
}

fn ratio(x: f64, max: f64) -> f64 {
    if max > 0.0 {
        x / max
    } else {
        0.0
    }
}

fn cells_of(g: &GroupState) -> Vec<CellReport> {
    g.cells
        .iter()
        .enumerate()
        .map(|(cell, c)| CellReport {
            cell,
            network_cell: None,
            s: c.s,
            h: c.h,
            big_h: c.big_h,
            c: c.c,
        })
        .collect()
}

fn cell_type_report(cell: &CellPrior, n_ops: usize) -> CellTypeReport {
    let max_gamma0 = cell.edges.iter().fold(0.0f64, |m, e| m.max(e.parent.gamma));
    let max_gamma_tilde = cell
        .edges
        .iter()
        .flat_map(|e| e.children.iter())
        .fold(0.0f64, |m, c| m.max(c.gamma_tilde));
    let mut groups = Vec::new();
    for (e, ep) in cell.edges.iter().enumerate() {
        let to = Node::Inter(ep.edge.to);
        groups.push(GroupReport {
            index: GroupKind::Parent { edge: e }.index(n_ops),
            kind: GroupRole::Parent,
            edge: e,
            from: ep.edge.from,
            to,
            op: None,
            gamma: ep.parent.gamma,
            omega: ep.parent.omega,
            gamma_tilde: None,
            relevance: ratio(ep.parent.gamma, max_gamma0),
            status: ep.parent.status,
            cells: cells_of(&ep.parent),
        });
        for (k, c) in ep.children.iter().enumerate() {
            groups.push(GroupReport {
                index: GroupKind::Child { edge: e, op: k }.index(n_ops),
                kind: GroupRole::Child,
                edge: e,
                from: ep.edge.from,
                to,
                op: Some(c.op),
                gamma: c.group.gamma,
                omega: c.group.omega,
                gamma_tilde: Some(c.gamma_tilde),
                relevance: ratio(c.gamma_tilde, max_gamma_tilde),
                status: c.group.status,
                cells: cells_of(&c.group),
            });
        }
    }
    CellTypeReport {
        cell_type: cell.cell_type,
        n_cells: cell.n_cells,
        max_gamma0,
        max_gamma_tilde,
        groups,
    }
}

impl RelevanceReport {
    /// The report of `prior` as it stands (after its last update).
    pub fn from_prior(prior: &Prior) -> RelevanceReport {
        let n_ops = prior.ops().len();
        RelevanceReport {
            format: FORMAT.to_string(),
            version: VERSION,
            space: prior.space().to_string(),
            ops: prior.ops().to_vec(),
            rounds: prior.rounds(),
            lambda_parent: prior.last_config().map(|c| c.lambda_parent),
            lambda_child: prior.last_config().map(|c| c.lambda_child),
            normal: cell_type_report(prior.cell(CellType::Normal), n_ops),
            reduce: cell_type_report(prior.cell(CellType::Reduce), n_ops),
        }
    }

    /// Fills `network_cell` for a network of `n_cells` cells with DARTS' reduction layout
    /// ([`reduction_cells`]). The counts must match the report's.
    pub fn set_network_layout(&mut self, n_cells: usize) -> Result<(), RelevanceError> {
        let layout = reduction_cells(n_cells);
        let normal_idx: Vec<usize> = (0..n_cells).filter(|&i| !layout[i]).collect();
        let reduce_idx: Vec<usize> = (0..n_cells).filter(|&i| layout[i]).collect();
        if normal_idx.len() != self.normal.n_cells || reduce_idx.len() != self.reduce.n_cells {
            return Err(RelevanceError::Layout {
                n_cells,
                normal: normal_idx.len(),
                reduce: reduce_idx.len(),
                have_normal: self.normal.n_cells,
                have_reduce: self.reduce.n_cells,
            });
        }
        for (report, idx) in [
            (&mut self.normal, &normal_idx),
            (&mut self.reduce, &reduce_idx),
        ] {
            for g in &mut report.groups {
                for c in &mut g.cells {
                    c.network_cell = idx.get(c.cell).copied();
                }
            }
        }
        Ok(())
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> Result<String, RelevanceError> {
        serde_json::to_string_pretty(self).map_err(|e| RelevanceError::Json(e.to_string()))
    }

    /// Reads a report, checking `format` and `version`.
    pub fn from_json(text: &str) -> Result<RelevanceReport, RelevanceError> {
        let r: RelevanceReport =
            serde_json::from_str(text).map_err(|e| RelevanceError::Json(e.to_string()))?;
        if r.format != FORMAT {
            return Err(RelevanceError::Format(format!(
                "format must be \"{FORMAT}\", got \"{}\"",
                r.format
            )));
        }
        if r.version != VERSION {
            return Err(RelevanceError::Format(format!(
                "unsupported version {} (this build reads {VERSION})",
                r.version
            )));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bayes::updated_bayesnas_prior;
    use crate::space::SearchSpace;

    fn updated_prior() -> Prior {
        updated_bayesnas_prior(|_, g, _, c| {
            let s = ((g * 7 + c * 3) % 11) as f64 / 10.0;
            let h = ((g + c) % 5) as f64 * 1e-3;
            (s, h)
        })
    }

    #[test]
    fn report_matches_prior_and_round_trips() {
        let prior = updated_prior();
        let mut rep = RelevanceReport::from_prior(&prior);
        rep.set_network_layout(8).unwrap();
        assert_eq!(rep.normal.groups.len(), 64);
        assert_eq!(rep.reduce.groups.len(), 64);
        let g = &rep.normal.groups[9]; // edge 1, op 0
        assert_eq!(g.kind, GroupRole::Child);
        assert_eq!((g.edge, g.op), (1, Some(Op::SepConv3x3)));
        let ep = &prior.cell(CellType::Normal).edges[1];
        assert_eq!(g.gamma, ep.children[0].group.gamma);
        assert_eq!(g.gamma_tilde, Some(ep.children[0].gamma_tilde));
        assert_eq!(g.cells.len(), 6);
        assert_eq!(g.cells[2].c, ep.children[0].group.cells[2].c);
        // Network layout N N R N N R N N: normal cell 2 is network cell 3; reduce 1 is 5.
        assert_eq!(g.cells[2].network_cell, Some(3));
        assert_eq!(rep.reduce.groups[0].cells[1].network_cell, Some(5));
        assert!(rep
            .normal
            .groups
            .iter()
            .all(|g| (0.0..=1.0).contains(&g.relevance)));
        assert_eq!(rep.lambda_parent, Some(0.005));
        let json = rep.to_json().unwrap();
        assert!(json.contains("\"H\""));
        assert!(json.contains("\"kind\": \"parent\""));
        let back = RelevanceReport::from_json(&json).unwrap();
        assert_eq!(back, rep);
        assert!(rep.clone().set_network_layout(20).is_err());
    }

    #[test]
    fn bad_files_are_errors() {
        let rep = RelevanceReport::from_prior(&Prior::new(&SearchSpace::darts()).unwrap());
        let mut v: serde_json::Value = serde_json::from_str(&rep.to_json().unwrap()).unwrap();
        v["version"] = 9.into();
        assert!(matches!(
            RelevanceReport::from_json(&v.to_string()),
            Err(RelevanceError::Format(_))
        ));
        v["version"] = 1.into();
        v["normal"]["groups"][0]["op"] = "conv_9x9".into();
        let e = RelevanceReport::from_json(&v.to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains("conv_9x9"), "{e}");
    }
}
