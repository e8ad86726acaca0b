//! [`CellTypeStats`]: the switch values and curvatures one update reads.

use super::{BayesError, GroupKind};

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
