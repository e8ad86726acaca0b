//! Perturbation-based selection (Wang et al., ICLR 2021, "Rethinking Architecture Selection
//! in Differentiable NAS"): an op's importance is the rise of the held-out loss when it is
//! removed from the trained supernet, not the magnitude of its architecture parameter.

use bayesnas_engine::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bayes::{GroupId, GroupKind, Prior};
use crate::searcher::{Batch, DataFeed, Searcher, SplitKind};
use crate::space::CellType;
use crate::supernet::CellCache;

/// How [`Searcher::perturbation_scores`] measures an op's importance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerturbMode {
    /// Wang et al. (2021): the rise of the held-out loss when the op's switch is set to 0.
    /// Ops that duplicate each other (four convolutions) each look unimportant, since the
    /// others make up for the one removed, while a unique op (skip, a pool) looks important.
    #[default]
    Remove,
    /// The op alone replaces its edge's mixture (the other child switches set to 0 and its
    /// own to their sum, so the edge keeps its switch mass): what the derived cell does with
    /// one op per edge. Ops rank by the held-out loss of that replacement, edges by the rise
    /// when the whole edge is removed (its parent switch set to 0).
    Replace,
}

/// Which batch-norm statistics the held-out evaluations of [`Searcher::perturbation_scores_with`]
/// normalise with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerturbBn {
    /// The running statistics of the trained supernet (evaluation mode), as Wang et al.
    /// Removing an op changes the scale of its node, and the batch norms downstream keep
    /// normalising with the statistics of the unperturbed supernet, so a rise also measures
    /// that scale mismatch.
    #[default]
    Running,
    /// The statistics of each held-out batch (training-mode batch norm; the running
    /// statistics are restored afterwards): a removal's scale change is normalised away, as
    /// in a derived cell trained on its own, and a rise measures the lost function only.
    Batch,
}

/// What [`Searcher::perturbation_scores_with`] measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerturbOptions {
    /// Held-out images (the first ones of the validation split).
    pub images: usize,
    /// How an op's importance is measured.
    pub mode: PerturbMode,
    /// The batch-norm statistics of the evaluations.
    pub bn: PerturbBn,
    /// Whether the caller reads the standard errors ([`PerturbationScores::normal_se`]): a
    /// file measured before they existed is then not reused.
    pub standard_errors: bool,
}

/// The held-out batches of a measurement and how they are evaluated.
struct HeldOut {
    batches: Vec<Batch>,
    bn: PerturbBn,
}

/// Output of [`Searcher::perturbation_scores`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PerturbationScores {
    /// Held-out images used.
    pub images: usize,
    /// Held-out loss of the unperturbed supernet.
    pub base_loss: f64,
    /// How the scores were measured (`remove` in files written before the mode existed).
    #[serde(default)]
    pub mode: PerturbMode,
    /// The batch-norm statistics of the evaluations (`running` in files written before the
    /// option existed).
    #[serde(default)]
    pub bn: PerturbBn,
    /// Normal cells: per edge, the loss rise for each op (space op order): with its switch set
    /// to 0 (`remove`) or with it alone replacing the edge (`replace`).
    pub normal: Vec<Vec<f64>>,
    /// The same for the reduction cells.
    pub reduce: Vec<Vec<f64>>,
    /// `replace` only: per edge of the normal cells, the loss rise when the whole edge is
    /// removed (empty for `remove`).
    #[serde(default)]
    pub normal_edges: Vec<f64>,
    /// The same for the reduction cells.
    #[serde(default)]
    pub reduce_edges: Vec<f64>,
    /// `remove` only: per edge of the normal cells, `normal_se[e][k][j]` is the standard error
    /// of the difference of two removal rises, `rise[k] - rise[j]`, over the held-out images
    /// (the sample standard deviation of the per-image loss differences over `sqrt(images)`;
    /// 0 on the diagonal). Empty in files written before it existed and for `replace`.
    #[serde(default)]
    pub normal_se: Vec<Vec<Vec<f64>>>,
    /// The same for the reduction cells.
    #[serde(default)]
    pub reduce_se: Vec<Vec<Vec<f64>>>,
}

impl PerturbationScores {
    /// The raw rises of one cell type in the shape of the prior's relevances (for reports):
    /// `gamma_tilde` := the rise per op, `gamma0` := the edge's best rise.
    pub fn raw_relevance(&self, prior: &Prior, ct: CellType) -> crate::derive::CellRelevance {
        if self.mode == PerturbMode::Replace {
            return self.replace_relevance(prior, ct);
        }
        let mut rel = prior.cell_relevance(ct);
        let rows = match ct {
            CellType::Normal => &self.normal,
            CellType::Reduce => &self.reduce,
        };
        for (e, row) in rows.iter().enumerate().take(rel.edges.len()) {
            rel.gamma_tilde[e] = row.iter().take(rel.ops.len()).copied().collect();
            rel.gamma0[e] = rel.gamma_tilde[e]
                .iter()
                .fold(f64::NEG_INFINITY, |m, &g| m.max(g));
        }
        rel
    }

    /// The rises of one cell type as derivation input (relevances must be `>= 0`):
    /// [`PerturbationScores::raw_relevance`] with every value clamped at 0, so edges are
    /// ranked by their best op and ops that lowered the loss when removed tie at 0.
    pub fn cell_relevance(&self, prior: &Prior, ct: CellType) -> crate::derive::CellRelevance {
        if self.mode == PerturbMode::Replace {
            return self.replace_relevance(prior, ct);
        }
        let mut rel = self.raw_relevance(prior, ct);
        for g in rel
            .gamma_tilde
            .iter_mut()
            .flatten()
            .chain(rel.gamma0.iter_mut())
        {
            *g = g.max(0.0);
        }
        rel
    }
}

impl PerturbationScores {
    /// [`PerturbationScores::cell_relevance`] with a preference for cheaper ops among those the
    /// held-out set cannot tell apart: an op inherits the rise of every op at least as costly
    /// whose rise exceeds its own by at most `z` standard errors of their difference,
    /// `eff[k] = max { rise[j] : cost[j] >= cost[k], rise[j] - rise[k] <= z * se[j][k] }`
    /// (`j = k` included), and ops of equal inherited rise rank by cost (cheaper first), then
    /// by their own rise, then in op order. `cost[e][k]` is the op's parameter count
    /// ([`Searcher::op_costs`]). The ranking is written into the values (each op's value is
    /// its inherited rise, lowered by `1e-12` per place behind the first op of the same
    /// inherited rise) so that every cell rule reads it; an edge keeps its best rise. Values
    /// are clamped at 0 as in [`PerturbationScores::cell_relevance`]. Needs `remove` scores
    /// with standard errors.
    pub fn cheaper_within(
        &self,
        prior: &Prior,
        ct: CellType,
        z: f64,
        cost: &[Vec<usize>],
    ) -> Result<crate::derive::CellRelevance> {
        if self.mode != PerturbMode::Remove {
            return Err(Error::Invalid(
                "the preference for cheaper ops needs removal scores (--perturb-mode remove)"
                    .into(),
            ));
        }
        if !(z.is_finite() && z >= 0.0) {
            return Err(Error::Invalid(format!(
                "the tie width must be a finite number of standard errors >= 0, got {z}"
            )));
        }
        let se = match ct {
            CellType::Normal => &self.normal_se,
            CellType::Reduce => &self.reduce_se,
        };
        let mut rel = self.raw_relevance(prior, ct);
        let (n_edges, k) = (rel.edges.len(), rel.ops.len());
        let square = |m: &Vec<Vec<f64>>| m.len() == k && m.iter().all(|r| r.len() == k);
        if se.len() != n_edges || !se.iter().all(square) {
            return Err(Error::Invalid(format!(
                "the {} perturbation scores have no standard errors for {n_edges} edges and {k} \
                 ops (measured before they existed): measure them again",
                ct.name()
            )));
        }
        if cost.len() != n_edges || cost.iter().any(|c| c.len() != k) {
            return Err(Error::Invalid(format!(
                "op costs: expected {n_edges} edges of {k} ops, got {}",
                cost.len()
            )));
        }
        for e in 0..n_edges {
            let rise = rel.gamma_tilde[e].clone();
            let (c, s) = (&cost[e], &se[e]);
            let eff: Vec<f64> = (0..k)
                .map(|i| {
                    (0..k)
                        .filter(|&j| c[j] >= c[i] && rise[j] - rise[i] <= z * s[j][i])
                        .fold(rise[i], |m, j| m.max(rise[j]))
                })
                .collect();
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&a, &b| {
                eff[b]
                    .total_cmp(&eff[a])
                    .then(c[a].cmp(&c[b]))
                    .then(rise[b].total_cmp(&rise[a]))
                    .then(a.cmp(&b))
            });
            let mut place = 0usize;
            for (r, &i) in order.iter().enumerate() {
                place = if r > 0 && eff[order[r - 1]] == eff[i] {
                    place + 1
                } else {
                    0
                };
                rel.gamma_tilde[e][i] = (eff[i] - 1e-12 * place as f64).max(0.0);
            }
            rel.gamma0[e] = rel.gamma0[e].max(0.0);
        }
        Ok(rel)
    }

    /// `replace` scores as relevances (all `>= 0`): `gamma0` of an edge is the rise when it
    /// is removed (clamped at 0) and `gamma_tilde[k] = gamma0 * w_k` with `w_k = (L_worst -
    /// L_k) / (L_worst - L_best)` from the edge's replacement losses `L` (1 for the best op,
    /// 0 for the worst; all 1 when every op gives the same loss). The DARTS cell rule then
    /// ranks edges by `gamma0` (their best op) and picks the best replacement per edge.
    fn replace_relevance(&self, prior: &Prior, ct: CellType) -> crate::derive::CellRelevance {
        let mut rel = prior.cell_relevance(ct);
        let (rows, edges) = match ct {
            CellType::Normal => (&self.normal, &self.normal_edges),
            CellType::Reduce => (&self.reduce, &self.reduce_edges),
        };
        for (e, row) in rows.iter().enumerate().take(rel.edges.len()) {
            let g0 = edges.get(e).copied().unwrap_or(0.0).max(0.0);
            let row: Vec<f64> = row.iter().take(rel.ops.len()).copied().collect();
            let best = row.iter().fold(f64::INFINITY, |m, &l| m.min(l));
            let worst = row.iter().fold(f64::NEG_INFINITY, |m, &l| m.max(l));
            rel.gamma0[e] = g0;
            rel.gamma_tilde[e] = row
                .iter()
                .map(|&l| {
                    let w = if worst > best {
                        (worst - l) / (worst - best)
                    } else {
                        1.0
                    };
                    g0 * w
                })
                .collect();
        }
        rel
    }
}

impl Searcher {
    /// Perturbation-based selection (Wang et al., ICLR 2021): on the trained supernet, for
    /// every edge and op of each cell type, the rise of the held-out loss (evaluation mode,
    /// the first `images` images of the validation split, always the same ones) when that
    /// op's switch is set to 0 in every cell of the type. Switches are restored afterwards,
    /// so the search state is unchanged. `observe(done, total)` reports progress.
    ///
    /// With [`PerturbMode::Replace`] each op instead replaces its edge's mixture in every
    /// cell of the type (see the mode), and each edge is also removed once.
    pub fn perturbation_scores(
        &mut self,
        data: &mut dyn DataFeed,
        images: usize,
        mode: PerturbMode,
        observe: &mut dyn FnMut(usize, usize),
    ) -> Result<PerturbationScores> {
        let opts = PerturbOptions {
            images,
            mode,
            bn: PerturbBn::Running,
            standard_errors: false,
        };
        Ok(self.perturbation_scores_with(data, opts, None, observe)?.0)
    }

    /// [`Searcher::perturbation_scores`] with the batch-norm statistics of `opts.bn`,
    /// returning `previous` instead of measuring again when it was measured on this very
    /// supernet and held-out set: same mode and statistics, same number of images and a base
    /// loss equal to the bit (the held-out loss of the unperturbed supernet
    /// is evaluated again, one pass over the held-out images, and is deterministic on one
    /// device and thread count). The flag says whether `previous` was reused. A different
    /// checkpoint, data split or image count gives a different base loss, so stale scores are
    /// never reused.
    pub fn perturbation_scores_with(
        &mut self,
        data: &mut dyn DataFeed,
        opts: PerturbOptions,
        previous: Option<&PerturbationScores>,
        observe: &mut dyn FnMut(usize, usize),
    ) -> Result<(PerturbationScores, bool)> {
        let PerturbOptions {
            images,
            mode,
            bn,
            standard_errors,
        } = opts;
        let mut held: Vec<Batch> = Vec::new();
        let mut n = 0usize;
        for batch in data.epoch(SplitKind::Validation, 0)? {
            if n >= images {
                break;
            }
            let (x, labels) = batch?;
            let take = labels.len().min(images - n);
            let (x, labels) = if take < labels.len() {
                let per = x.numel() / labels.len();
                let mut shape = x.shape().to_vec();
                shape[0] = take;
                let v = x.to_vec()[..take * per].to_vec();
                (Tensor::from_vec(v, &shape)?, labels[..take].to_vec())
            } else {
                (x, labels)
            };
            n += take;
            held.push((self.on_device(x)?, labels));
        }
        if n == 0 {
            return Err(Error::Invalid(
                "perturbation scores: the validation split has no images".into(),
            ));
        }
        let held = HeldOut { batches: held, bn };
        // Training-mode evaluations update the running statistics: restore them whatever
        // happens.
        let buffers = match bn {
            PerturbBn::Running => Vec::new(),
            PerturbBn::Batch => self
                .store
                .iter()
                .filter(|(_, p)| !p.trainable)
                .map(|(id, p)| (id, p.value.clone()))
                .collect(),
        };
        let previous = previous
            .filter(|p| !standard_errors || mode != PerturbMode::Remove || p.has_standard_errors());
        let measured = self.measure_scores(&held, n, mode, previous, observe);
        for (id, v) in buffers {
            self.store.get_mut(id).value = v;
        }
        measured
    }

    /// The body of [`Searcher::perturbation_scores_with`] on the gathered held-out set.
    fn measure_scores(
        &mut self,
        held: &HeldOut,
        n: usize,
        mode: PerturbMode,
        previous: Option<&PerturbationScores>,
        observe: &mut dyn FnMut(usize, usize),
    ) -> Result<(PerturbationScores, bool)> {
        let bn = held.bn;
        let base_loss = self.held_out_loss(held)?;
        if let Some(prev) = previous {
            if prev.mode == mode
                && prev.bn == bn
                && prev.images == n
                && prev.base_loss.to_bits() == base_loss.to_bits()
            {
                return Ok((prev.clone(), true));
            }
        }
        let k = self.net.n_ops();
        let mut scores = PerturbationScores {
            images: n,
            base_loss,
            mode,
            bn,
            normal: Vec::new(),
            reduce: Vec::new(),
            normal_edges: Vec::new(),
            reduce_edges: Vec::new(),
            normal_se: Vec::new(),
            reduce_se: Vec::new(),
        };
        let per_edge = match mode {
            PerturbMode::Remove => k,
            PerturbMode::Replace => k + 1,
        };
        let total: usize = CellType::ALL
            .iter()
            .filter(|&&ct| !self.net.cells_of(ct).is_empty())
            .map(|&ct| self.net.config.space.edges(ct).len() * per_edge)
            .sum();
        let mut done = 0;
        for ct in CellType::ALL {
            if self.net.cells_of(ct).is_empty() {
                continue;
            }
            let mut rows = Vec::new();
            // Every evaluation of this cell type changes the switches of one of its edges:
            // the cells before its first cell, and that cell's other nodes, are the same in
            // each, so they are computed once per held-out batch.
            let caches = self.cell_caches(held, self.net.cells_of(ct)[0])?;
            if mode == PerturbMode::Replace {
                let mut edge_rises = Vec::new();
                for e in 0..self.net.config.space.edges(ct).len() {
                    let (rise, row) = self.replace_scores(held, base_loss, ct, e, &caches)?;
                    edge_rises.push(rise);
                    rows.push(row);
                    done += k + 1;
                    observe(done, total);
                }
                match ct {
                    CellType::Normal => (scores.normal, scores.normal_edges) = (rows, edge_rises),
                    CellType::Reduce => (scores.reduce, scores.reduce_edges) = (rows, edge_rises),
                }
                continue;
            }
            let mut ses = Vec::new();
            for e in 0..self.net.config.space.edges(ct).len() {
                let mut row = Vec::with_capacity(k);
                let mut losses = Vec::with_capacity(k);
                for op in 0..k {
                    let kind = GroupKind::Child { edge: e, op };
                    let members = self.group_members(GroupId {
                        cell_type: ct,
                        kind,
                    });
                    let mut per_image = Vec::with_capacity(n);
                    row.push(self.rise_without(
                        &members,
                        held,
                        base_loss,
                        &mut per_image,
                        (&caches, e),
                    )?);
                    losses.push(per_image);
                    done += 1;
                    observe(done, total);
                }
                rows.push(row);
                ses.push(difference_standard_errors(&losses));
            }
            match ct {
                CellType::Normal => (scores.normal, scores.normal_se) = (rows, ses),
                CellType::Reduce => (scores.reduce, scores.reduce_se) = (rows, ses),
            }
        }
        Ok((scores, false))
    }

    /// `replace` scores of edge `e` of cell type `ct`: the loss rise when the edge is removed
    /// (parent switches 0 in every cell of the type), and per op the rise when it alone
    /// replaces the mixture (child switches of the edge all 0 but its own, set to their sum,
    /// in every cell). Every switch is restored.
    fn replace_scores(
        &mut self,
        held: &HeldOut,
        base_loss: f64,
        ct: CellType,
        e: usize,
        caches: &[CellCache],
    ) -> Result<(f64, Vec<f64>)> {
        let parents = self.group_members(GroupId {
            cell_type: ct,
            kind: GroupKind::Parent { edge: e },
        });
        let edge_rise =
            self.rise_without(&parents, held, base_loss, &mut Vec::new(), (caches, e))?;
        // The child-switch tensor of the edge in each cell of the type.
        let tensors: Vec<ParamId> = self
            .group_members(GroupId {
                cell_type: ct,
                kind: GroupKind::Child { edge: e, op: 0 },
            })
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let mut old = Vec::with_capacity(tensors.len());
        for &p in &tensors {
            old.push(self.store.value(p).try_to_vec()?);
        }
        let k = self.net.n_ops();
        let mut row = Vec::with_capacity(k);
        // Each op's setting overwrites every element of these tensors: the switches are
        // restored once, after the last op (or the first error).
        let mut measure = |s: &mut Self| -> Result<()> {
            for op in 0..k {
                for (&p, v) in tensors.iter().zip(&old) {
                    let mut only = vec![0.0f32; v.len()];
                    only[op] = v.iter().sum();
                    s.set_tensor(p, only)?;
                }
                row.push(s.held_out_losses(held, None, Some((caches, e)))? - base_loss);
            }
            Ok(())
        };
        let measured = measure(self);
        for (&p, v) in tensors.iter().zip(old) {
            self.set_tensor(p, v)?;
        }
        measured?;
        Ok((edge_rise, row))
    }

    /// Per edge and op of cell type `ct` (space order): the op's trainable parameters summed
    /// over the cells of the type, the cost [`PerturbationScores::cheaper_within`] reads
    /// (pools and skip connect 0, a skip connect of a stride-2 edge its factorized reduction).
    pub fn op_costs(&self, ct: CellType) -> Vec<Vec<usize>> {
        let space = &self.net.config.space;
        let cells = self.net.cells_of(ct);
        (0..space.edges(ct).len())
            .map(|e| {
                space
                    .ops
                    .iter()
                    .map(|op| {
                        let prefixes: Vec<String> = cells
                            .iter()
                            .map(|c| format!("cells.{c}.edges.{e}.{}.", op.name()))
                            .collect();
                        self.store
                            .iter()
                            .filter(|(_, p)| {
                                p.trainable && prefixes.iter().any(|x| p.name.starts_with(x))
                            })
                            .map(|(_, p)| p.value.numel())
                            .sum()
                    })
                    .collect()
            })
            .collect()
    }

    /// Replaces the value of parameter `p` (same shape, on its device).
    fn set_tensor(&mut self, p: ParamId, v: Vec<f32>) -> Result<()> {
        let t = self.store.value(p);
        let (shape, dev) = (t.shape().to_vec(), t.device());
        let t = Tensor::from_vec(v, &shape)?;
        self.store.get_mut(p).value = if dev == Device::Cpu {
            t
        } else {
            t.to_device(dev)?
        };
        Ok(())
    }

    /// The rise of the held-out loss over `base_loss` with the switch elements `members` set
    /// to 0; they are restored afterwards (also when the evaluation fails).
    /// The per-image losses of that evaluation are appended to `per_image`. `members` are
    /// switches of edge `reuse.1` of the cells of the type whose first cell `reuse.0` recorded.
    fn rise_without(
        &mut self,
        members: &[(ParamId, usize)],
        held: &HeldOut,
        base_loss: f64,
        per_image: &mut Vec<f64>,
        reuse: (&[CellCache], usize),
    ) -> Result<f64> {
        let saved = self.set_switches(members, 0.0)?;
        let loss = self.held_out_losses(held, Some(per_image), Some(reuse));
        for ((p, i), v) in members.iter().zip(saved) {
            self.set_switches(&[(*p, *i)], v)?;
        }
        Ok(loss? - base_loss)
    }

    /// Sets the switch elements `members` to `value`; returns their previous values.
    fn set_switches(&mut self, members: &[(ParamId, usize)], value: f32) -> Result<Vec<f32>> {
        let mut old = Vec::with_capacity(members.len());
        for &(p, i) in members {
            let mut v = self.store.value(p).try_to_vec()?;
            old.push(v[i]);
            v[i] = value;
            self.set_tensor(p, v)?;
        }
        Ok(old)
    }

    /// Mean cross-entropy of the network over `held` through [`crate::retrain::evaluate_on`]:
    /// in evaluation mode, or with batch statistics ([`PerturbBn::Batch`]: training-mode
    /// tapes, forward only; they update the running statistics).
    fn held_out_loss(&mut self, held: &HeldOut) -> Result<f64> {
        self.held_out_losses(held, None, None)
    }

    /// [`Searcher::held_out_loss`], also appending each image's cross-entropy (in f64, from
    /// the same logits) to `per_image` when given; the mean returned is the same. With
    /// `reuse = Some((caches, e))` only the switches of edge `e` of the cell type whose first
    /// cell `caches` recorded (one cache per held-out batch) differ from the recorded pass,
    /// and [`Supernet::forward_reusing`] recomputes only what they reach: the same losses,
    /// bit for bit, in less time.
    ///
    /// [`Supernet::forward_reusing`]: crate::supernet::Supernet::forward_reusing
    fn held_out_losses(
        &mut self,
        held: &HeldOut,
        mut per_image: Option<&mut Vec<f64>>,
        reuse: Option<(&[CellCache], usize)>,
    ) -> Result<f64> {
        if let Some((caches, _)) = reuse {
            if caches.len() != held.batches.len() {
                return Err(Error::Invalid(format!(
                    "held-out evaluation: {} cell caches for {} batches",
                    caches.len(),
                    held.batches.len()
                )));
            }
        }
        let (net, store) = (&self.net, &mut self.store);
        let mut batches = held
            .batches
            .iter()
            .map(|(x, labels)| Ok((x.clone(), labels.clone())));
        let mut labels = held.batches.iter().map(|(_, l)| l);
        let mut index = 0;
        let totals = crate::retrain::evaluate_on(&mut batches, held.new_tape(), &mut |tape, x| {
            let logits = match reuse {
                Some((caches, e)) => net.forward_reusing(tape, store, &caches[index], e)?,
                None => {
                    let xv = tape.input(x);
                    net.forward(tape, store, xv)?
                }
            };
            index += 1;
            if let Some(out) = per_image.as_deref_mut() {
                let l = labels.next().ok_or_else(|| {
                    Error::Invalid("held-out evaluation: more batches than labels".into())
                })?;
                out.extend(cross_entropies(tape.value(logits), l)?);
            }
            Ok(logits)
        })?;
        Ok(totals.means().0)
    }
}

impl HeldOut {
    /// The tapes of its evaluations: evaluation mode, or training mode for batch statistics.
    fn new_tape(&self) -> fn() -> Tape {
        match self.bn {
            PerturbBn::Running => Tape::new_eval,
            PerturbBn::Batch => Tape::new,
        }
    }
}

impl Searcher {
    /// One [`CellCache`] of cell `start` per held-out batch, recorded by a pass of the
    /// unchanged network (the tapes of [`HeldOut::new_tape`]).
    fn cell_caches(&mut self, held: &HeldOut, start: usize) -> Result<Vec<CellCache>> {
        let (net, store) = (&self.net, &mut self.store);
        held.batches
            .iter()
            .map(|(x, _)| {
                let mut tape = (held.new_tape())();
                let xv = tape.input(x.clone());
                Ok(net.forward_caching(&mut tape, store, xv, start)?.1)
            })
            .collect()
    }
}

/// Each row's cross-entropy `logsumexp(z) - z[label]` of logits `[n, classes]`, in f64.
fn cross_entropies(logits: &Tensor, labels: &[u32]) -> Result<Vec<f64>> {
    let z = logits.try_to_vec()?;
    let n = labels.len();
    if n == 0 || z.len() % n != 0 {
        return Err(Error::Invalid(format!(
            "cross-entropies: {} logits for {n} labels",
            z.len()
        )));
    }
    let classes = z.len() / n;
    labels
        .iter()
        .zip(z.chunks(classes))
        .map(|(&y, row)| {
            let y = y as usize;
            if y >= classes {
                return Err(Error::Invalid(format!(
                    "cross-entropies: label {y} of {classes} classes"
                )));
            }
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            Ok(lse - row[y] as f64)
        })
        .collect()
}

/// `se[k][j]`: the standard error of the mean of `losses[k][i] - losses[j][i]` over the
/// images `i` (sample standard deviation over `sqrt(n)`; 0 for fewer than 2 images).
fn difference_standard_errors(losses: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let k = losses.len();
    let mut se = vec![vec![0.0; k]; k];
    for a in 0..k {
        for b in 0..a {
            let d: Vec<f64> = losses[a]
                .iter()
                .zip(&losses[b])
                .map(|(x, y)| x - y)
                .collect();
            let n = d.len();
            if n < 2 {
                continue;
            }
            let mean = d.iter().sum::<f64>() / n as f64;
            let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            let s = (var / n as f64).sqrt();
            se[a][b] = s;
            se[b][a] = s;
        }
    }
    se
}

impl PerturbationScores {
    /// Whether every edge of both cell types has its standard errors.
    pub fn has_standard_errors(&self) -> bool {
        self.normal_se.len() == self.normal.len() && self.reduce_se.len() == self.reduce.len()
    }
}
