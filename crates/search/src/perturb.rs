//! Perturbation-based selection (Wang et al., ICLR 2021, "Rethinking Architecture Selection
//! in Differentiable NAS"): an op's importance is the rise of the held-out loss when it is
//! removed from the trained supernet, not the magnitude of its architecture parameter.

use bayesnas_engine::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bayes::{GroupId, GroupKind, Prior};
use crate::searcher::{Batch, DataFeed, Searcher, SplitKind};
use crate::space::CellType;

/// Output of [`Searcher::perturbation_scores`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PerturbationScores {
    /// Held-out images used.
    pub images: usize,
    /// Held-out loss of the unperturbed supernet.
    pub base_loss: f64,
    /// Normal cells: per edge, the loss rise for each op's switch set to 0 (space op order).
    pub normal: Vec<Vec<f64>>,
    /// The same for the reduction cells.
    pub reduce: Vec<Vec<f64>>,
}

impl PerturbationScores {
    /// The raw rises of one cell type in the shape of the prior's relevances (for reports):
    /// `gamma_tilde` := the rise per op, `gamma0` := the edge's best rise.
    pub fn raw_relevance(&self, prior: &Prior, ct: CellType) -> crate::derive::CellRelevance {
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

impl Searcher {
    /// Perturbation-based selection (Wang et al., ICLR 2021): on the trained supernet, for
    /// every edge and op of each cell type, the rise of the held-out loss (evaluation mode,
    /// the first `images` images of the validation split, always the same ones) when that
    /// op's switch is set to 0 in every cell of the type. Switches are restored afterwards,
    /// so the search state is unchanged. `observe(done, total)` reports progress.
    pub fn perturbation_scores(
        &mut self,
        data: &mut dyn DataFeed,
        images: usize,
        observe: &mut dyn FnMut(usize, usize),
    ) -> Result<PerturbationScores> {
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
        let base_loss = self.held_out_loss(&held)?;
        let k = self.net.n_ops();
        let mut scores = PerturbationScores {
            images: n,
            base_loss,
            normal: Vec::new(),
            reduce: Vec::new(),
        };
        let total: usize = CellType::ALL
            .iter()
            .filter(|&&ct| !self.net.cells_of(ct).is_empty())
            .map(|&ct| self.net.config.space.edges(ct).len() * k)
            .sum();
        let mut done = 0;
        for ct in CellType::ALL {
            if self.net.cells_of(ct).is_empty() {
                continue;
            }
            let mut rows = Vec::new();
            for e in 0..self.net.config.space.edges(ct).len() {
                let mut row = Vec::with_capacity(k);
                for op in 0..k {
                    let kind = GroupKind::Child { edge: e, op };
                    let members = self.group_members(GroupId {
                        cell_type: ct,
                        kind,
                    });
                    let saved = self.set_switches(&members, 0.0)?;
                    let loss = self.held_out_loss(&held);
                    for ((p, i), v) in members.iter().zip(saved) {
                        self.set_switches(&[(*p, *i)], v)?;
                    }
                    row.push(loss? - base_loss);
                    done += 1;
                    observe(done, total);
                }
                rows.push(row);
            }
            match ct {
                CellType::Normal => scores.normal = rows,
                CellType::Reduce => scores.reduce = rows,
            }
        }
        Ok(scores)
    }

    /// Sets the switch elements `members` to `value`; returns their previous values.
    fn set_switches(&mut self, members: &[(ParamId, usize)], value: f32) -> Result<Vec<f32>> {
        let mut old = Vec::with_capacity(members.len());
        for &(p, i) in members {
            let t = self.store.value(p);
            let (shape, dev) = (t.shape().to_vec(), t.device());
            let mut v = t.try_to_vec()?;
            old.push(v[i]);
            v[i] = value;
            let t = Tensor::from_vec(v, &shape)?;
            self.store.get_mut(p).value = if dev == Device::Cpu {
                t
            } else {
                t.to_device(dev)?
            };
        }
        Ok(old)
    }

    /// Mean cross-entropy of the network in evaluation mode over `held` (through
    /// [`crate::retrain::evaluate`]).
    fn held_out_loss(&mut self, held: &[Batch]) -> Result<f64> {
        let (net, store) = (&self.net, &mut self.store);
        let mut batches = held
            .iter()
            .map(|(x, labels)| Ok((x.clone(), labels.clone())));
        let totals = crate::retrain::evaluate(&mut batches, &mut |tape, x| {
            let xv = tape.input(x);
            net.forward(tape, store, xv)
        })?;
        Ok(totals.means().0)
    }
}
