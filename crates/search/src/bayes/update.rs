//! The closed-form update of the prior (method note section 5): the checks that name the
//! offending group and cell, then the engine's hierarchical group-ARD update
//! ([`bayesnas_engine::ard`]; on a CUDA device its kernel), committed into the [`Prior`].

use bayesnas_engine::ard::{self, status, ArdInput, ArdOutput};
use bayesnas_engine::device::cuda;
use bayesnas_engine::Device;

use super::{
    BayesError, CellStat, CellTypeStats, GroupKind, GroupState, GroupStatus, NegativeCurvature,
    Prior, UpdateConfig, UpdateSummary,
};
use crate::space::CellType;

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

/// The closed-form update of one group (note section 5).
///
/// `gamma` is the group's prior variance in force (parent: `gamma0`; child: `gamma_tilde`),
/// `s` and `h` the switch values and curvatures of the group's cells (same length), `lambda`
/// the group's lambda, `policy` the treatment of negative curvature. Every cell contributes
/// its own term `H_c / (1 + gamma H_c)` to omega. See the module documentation for the edge
/// cases; an empty group (no cells) counts as dead. The arithmetic is the engine's
/// ([`ard::update_group`]), the one [`Prior::update`] runs for every group.
pub fn update_group(
    gamma: f64,
    s: &[f64],
    h: &[f64],
    lambda: f64,
    policy: NegativeCurvature,
) -> Result<GroupUpdate, BayesError> {
    check_group(gamma, s, h, lambda, policy, CellType::Normal, || {
        "group".to_string()
    })?;
    let mut c = vec![0.0; s.len()];
    let clamp = policy == NegativeCurvature::ClampToZero;
    let (r, clamped) = ard::update_group(gamma, gamma, s, h, lambda, clamp, &mut c);
    let status = group_status(r.status).ok_or_else(|| {
        BayesError::Inconsistent(format!("the group update returned status {}", r.status))
    })?;
    Ok(GroupUpdate {
        gamma: (status != GroupStatus::NoCurvature).then_some(r.gamma),
        omega: r.omega,
        status,
        cells: cell_stats(s, h, &c, lambda),
        clamped,
    })
}

/// Everything the update of one group rejects, as [`BayesError`]s naming the group (`group`
/// is called only for an error) and cell, in this order: lambda, gamma, the lengths, then
/// cell by cell a switch value or curvature that is not finite and a negative curvature
/// (under [`NegativeCurvature::Reject`]).
fn check_group(
    gamma: f64,
    s: &[f64],
    h: &[f64],
    lambda: f64,
    policy: NegativeCurvature,
    cell: CellType,
    group: impl Fn() -> String,
) -> Result<(), BayesError> {
    if !(lambda.is_finite() && lambda > 0.0) {
        return Err(BayesError::BadLambda {
            name: "lambda",
            value: lambda,
        });
    }
    if !(gamma.is_finite() && gamma >= 0.0) {
        return Err(BayesError::Inconsistent(format!(
            "{cell} {}: prior gamma must be finite and >= 0, got {gamma}",
            group()
        )));
    }
    if s.len() != h.len() {
        return Err(BayesError::Shape {
            cell,
            msg: format!(
                "{}: {} switch values but {} curvatures",
                group(),
                s.len(),
                h.len()
            ),
        });
    }
    for (index, (&sc, &hc)) in s.iter().zip(h).enumerate() {
        for (what, value) in [("switch", sc), ("curvature", hc)] {
            if !value.is_finite() {
                return Err(BayesError::NotFinite {
                    cell,
                    group: group(),
                    index,
                    what,
                    value,
                });
            }
        }
        if hc < 0.0 && policy == NegativeCurvature::Reject {
            return Err(BayesError::NegativeCurvature {
                cell,
                group: group(),
                index,
                value: hc,
            });
        }
    }
    Ok(())
}

/// Per-cell `s`, `h` (negative values clamped to 0), `H = h / lambda` and `C`.
fn cell_stats(s: &[f64], h: &[f64], c: &[f64], lambda: f64) -> Vec<CellStat> {
    s.iter()
        .zip(h)
        .zip(c)
        .map(|((&s, &h), &c)| {
            let h = if h < 0.0 { 0.0 } else { h };
            CellStat {
                s,
                h,
                big_h: ard::relative_curvature(h, lambda),
                c,
            }
        })
        .collect()
}

/// The [`GroupStatus`] of a successful group status code.
fn group_status(code: i32) -> Option<GroupStatus> {
    match code {
        status::UPDATED => Some(GroupStatus::Updated),
        status::DEAD => Some(GroupStatus::Dead),
        status::NO_CURVATURE => Some(GroupStatus::NoCurvature),
        _ => None,
    }
}

impl Prior {
    /// The closed-form update of every group from one switch epoch (note section 5).
    ///
    /// `normal` and `reduce` hold `s_{g,c}` and `h_{g,c}` for every group and every cell of
    /// that type. Parents are updated first; each child then uses its edge's NEW `gamma0` in
    /// the combination. All inputs are checked before anything changes: on error the prior is
    /// unchanged. The arithmetic is [`ard::group_ard_update`] on the host.
    pub fn update(
        &mut self,
        normal: &CellTypeStats,
        reduce: &CellTypeStats,
        config: &UpdateConfig,
    ) -> Result<UpdateSummary, BayesError> {
        self.update_with(normal, reduce, config, &mut |inp| {
            Ok(ard::group_ard_update(inp))
        })
    }

    /// [`Prior::update`] computed on `device`: on a CUDA device the `group_ard_update` kernel
    /// computes gamma, omega, `gamma_tilde` and every cell's `C` for all groups of a cell type
    /// in one launch (f64, the same arithmetic as the CPU), and the result is committed here;
    /// on the CPU this is [`Prior::update`]. Errors leave the prior unchanged; bad statistics
    /// are rejected on the host before the launch, with the error naming the group and cell.
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
            be.group_ard_update(inp).map_err(dev_err)
        })
    }

    /// [`Prior::update`] with the per-cell-type arithmetic done by `kernel`, which must behave
    /// as [`ard::group_ard_update`] (the host function, the CUDA backend's
    /// [`cuda::CudaBackend::group_ard_update`], or in tests the host-emulated kernel); a cell
    /// type is the hierarchy of its edges (parents) and their ops (children), its cells the
    /// members. The statistics are checked first, the results committed as [`Prior::update`]
    /// describes; errors leave the prior unchanged.
    pub fn update_with(
        &mut self,
        normal: &CellTypeStats,
        reduce: &CellTypeStats,
        config: &UpdateConfig,
        kernel: &mut dyn FnMut(&ArdInput<'_>) -> Result<ArdOutput, BayesError>,
    ) -> Result<UpdateSummary, BayesError> {
        self.check_update(normal, reduce, config)?;
        let mut next = self.clone();
        let mut summary = UpdateSummary::default();
        for (ct, stats) in [(CellType::Normal, normal), (CellType::Reduce, reduce)] {
            if stats.n_cells() == 0 {
                summary.skipped_cell_types += 1;
                continue;
            }
            let gamma_prev = self.own_gammas(ct);
            let gamma_in = self.gammas_in_force(ct);
            self.check_groups(ct, stats, &gamma_in, config)?;
            let out = kernel(&ArdInput {
                n_parents: stats.n_edges(),
                n_children: stats.n_ops(),
                n_members: stats.n_cells(),
                w: stats.s_flat(),
                h: stats.h_flat(),
                gamma_in: &gamma_in,
                gamma_prev: &gamma_prev,
                lambda_parent: config.lambda_parent,
                lambda_child: config.lambda_child,
                clamp_negative: config.negative_curvature == NegativeCurvature::ClampToZero,
            })?;
            let groups = stats.n_groups();
            let nc = stats.n_cells();
            if [out.gamma.len(), out.omega.len(), out.tilde.len()]
                .iter()
                .chain([out.status.len(), out.clamped.len()].iter())
                .any(|&l| l != groups)
                || out.c.len() != groups * nc
            {
                return Err(BayesError::Device(format!(
                    "{ct}: the kernel returned outputs of the wrong length"
                )));
            }
            if let Some(g) = out.status.iter().position(|&st| st < 0) {
                return Err(BayesError::Device(format!(
                    "the kernel reported status {} for {ct} group {g} but the host update \
                     accepts the statistics",
                    out.status[g]
                )));
            }
            let per_edge = stats.n_ops() + 1;
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
                    let status = group_status(out.status[g]).ok_or_else(|| {
                        BayesError::Device(format!(
                            "unknown status {} for {ct} group {g}",
                            out.status[g]
                        ))
                    })?;
                    let cells = g * nc..(g + 1) * nc;
                    // The kernel returns the previous gamma where it keeps it.
                    let up = GroupUpdate {
                        gamma: Some(out.gamma[g]),
                        omega: out.omega[g],
                        status,
                        cells: cell_stats(
                            &stats.s_flat()[cells.clone()],
                            &stats.h_flat()[cells.clone()],
                            &out.c[cells],
                            lambda,
                        ),
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

    /// [`check_group`] for every group of one cell type, in the layout order (the order the
    /// update visits them); `gamma_in` is [`Prior::gammas_in_force`].
    fn check_groups(
        &self,
        ct: CellType,
        stats: &CellTypeStats,
        gamma_in: &[f64],
        config: &UpdateConfig,
    ) -> Result<(), BayesError> {
        for (g, &gamma) in gamma_in.iter().enumerate() {
            let kind = GroupKind::from_index(g, self.ops.len());
            let lambda = match kind {
                GroupKind::Parent { .. } => config.lambda_parent,
                GroupKind::Child { .. } => config.lambda_child,
            };
            check_group(
                gamma,
                stats.s(kind).unwrap_or_default(),
                stats.h(kind).unwrap_or_default(),
                lambda,
                config.negative_curvature,
                ct,
                || kind.describe(&self.ops),
            )?;
        }
        Ok(())
    }

    /// Makes the updated copy `next` the prior (one more round, under `config`).
    fn commit(&mut self, mut next: Prior, config: &UpdateConfig) {
        next.rounds += 1;
        next.last_config = Some(*config);
        *self = next;
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
