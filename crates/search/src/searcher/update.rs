//! The Bayesian side of the search: switch groups, the gradient of the reweighted group
//! lasso, and the closed-form update of the prior from the accumulated curvature.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};

use bayesnas_engine::prelude::*;

use super::Searcher;
use crate::bayes::{GroupId, GroupKind, UpdateConfig, UpdateSummary};
use crate::space::CellType;

impl Searcher {
    /// Members of a switch group: (param, element) per cell of the type, in depth order.
    pub(crate) fn group_members(&self, id: GroupId) -> Vec<(ParamId, usize)> {
        self.net
            .cells_of(id.cell_type)
            .into_iter()
            .map(|c| {
                let me = &self.net.cells[c].edges[id.kind.edge()];
                match id.kind {
                    GroupKind::Parent { .. } => (me.s0, 0),
                    GroupKind::Child { op, .. } => (me.s, op),
                }
            })
            .collect()
    }

    pub(super) fn groups(&self) -> Vec<GroupId> {
        let k = self.net.n_ops();
        let mut out = Vec::new();
        for ct in CellType::ALL {
            if self.net.cells_of(ct).is_empty() {
                continue;
            }
            for e in 0..self.net.config.space.edges(ct).len() {
                out.push(GroupId {
                    cell_type: ct,
                    kind: GroupKind::Parent { edge: e },
                });
                for op in 0..k {
                    out.push(GroupId {
                        cell_type: ct,
                        kind: GroupKind::Child { edge: e, op },
                    });
                }
            }
        }
        out
    }

    /// Adds the gradient of `sum_g lambda_g omega_g ||s_g||` to the switch gradients, on the
    /// device in one backend call (no host read), and returns the penalty as a `[1]` tensor
    /// on the device. The penalty depends on a few hundred scalars only, so its exact
    /// gradient is computed directly instead of on the tape.
    pub(super) fn add_penalty_gradient(&mut self) -> Result<Tensor> {
        let mut groups = Vec::new();
        for id in self.groups() {
            let lambda = match id.kind {
                GroupKind::Parent { .. } => self.settings.lambda_parent,
                GroupKind::Child { .. } => self.settings.lambda_child,
            };
            let omega = self
                .prior
                .omega_for_penalty(id)
                .map_err(|e| Error::Invalid(e.to_string()))?;
            groups.push((lambda * omega, self.group_members(id)));
        }
        self.store.add_group_lasso_gradient(&groups)
    }

    /// The closed-form update from the curvature accumulated over `curv_batches` batches,
    /// averaged and multiplied by `scale` ([`CurvatureScale`](super::CurvatureScale)).
    pub(super) fn update_prior(
        &mut self,
        curv_batches: usize,
        scale: f64,
    ) -> Result<UpdateSummary> {
        let mut stats = HashMap::new();
        // Each switch tensor is downloaded once.
        let mut values: BTreeMap<ParamId, Vec<f32>> = BTreeMap::new();
        let mut curv: BTreeMap<ParamId, Vec<f32>> = BTreeMap::new();
        for ct in CellType::ALL {
            let cells = self.net.cells_of(ct);
            let mut st = self.prior.stats_template(ct, cells.len());
            for id in self.groups().into_iter().filter(|g| g.cell_type == ct) {
                for (c, (p, i)) in self.group_members(id).into_iter().enumerate() {
                    let s = match values.entry(p) {
                        Entry::Occupied(o) => o.into_mut(),
                        Entry::Vacant(v) => v.insert(self.store.value(p).try_to_vec()?),
                    }[i] as f64;
                    let h = match curv.entry(p) {
                        Entry::Occupied(o) => o.into_mut(),
                        Entry::Vacant(v) => v.insert(self.store.get(p).curvature.try_to_vec()?),
                    }[i] as f64
                        / curv_batches as f64
                        * scale;
                    st.set(id.kind, c, s, h)
                        .map_err(|e| Error::Invalid(e.to_string()))?;
                }
            }
            stats.insert(ct, st);
        }
        let cfg = UpdateConfig {
            lambda_parent: self.settings.lambda_parent,
            lambda_child: self.settings.lambda_child,
            ..UpdateConfig::new(self.settings.lambda_parent)
        };
        // On a CUDA device the closed-form update runs in the group_ard_update kernel.
        let device = self.device();
        self.prior
            .update_on(
                device,
                &stats[&CellType::Normal],
                &stats[&CellType::Reduce],
                &cfg,
            )
            .map_err(|e| Error::Invalid(format!("prior update: {e}")))
    }
}
