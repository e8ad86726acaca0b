//! The supernet: stem, cells whose every edge carries every candidate operation gated by
//! switches (`edge(x) = s0 * sum_k s_k op_k(x)`, method note section 3), global pooling and a
//! linear classifier. Search-time batch norm has no affine parameters.
//!
//! Channel bookkeeping follows DARTS' `model_search.py`: stem `3C`, the channel count doubles
//! at each reduction cell, a cell outputs the concatenation of its intermediate nodes.

use std::collections::HashMap;

use bayesnas_engine::nn::Linear;
use bayesnas_engine::prelude::*;

use crate::layers::{
    build_cells, relu_once, sum_terms, CellInputs, CellSlot, Flavour, OpLayers, Stem,
};
use crate::space::{reduction_cells, CellType, Edge, Node, SearchSpace};

/// Optimiser group of network weights.
pub const WEIGHTS: &str = "weights";
/// Optimiser group of switches.
pub const SWITCHES: &str = "switches";

/// Shape of a supernet.
#[derive(Clone, Debug)]
pub struct SupernetConfig {
    /// Edges and candidate operations.
    pub space: SearchSpace,
    /// Initial channel count C (cells of the first stage have C channels per node).
    pub channels: usize,
    /// Number of cells; reductions at 1/3 and 2/3 of the depth.
    pub cells: usize,
    /// Image channels of the data set (1 for (Fashion-)MNIST, 3 for CIFAR-10).
    pub in_channels: usize,
    /// Image side (28 or 32).
    pub image: usize,
    /// Number of classes of the classifier.
    pub classes: usize,
}

impl SupernetConfig {
    /// Checks that the network can be built: enough spatial size for the reductions, every
    /// intermediate node has an input, at least one cell.
    pub fn validate(&self) -> Result<()> {
        if self.cells == 0 || self.channels == 0 || self.in_channels == 0 || self.classes < 2 {
            return Err(Error::Invalid(format!(
                "supernet: cells ({}), channels ({}) and input channels ({}) must be positive and classes ({}) at least 2",
                self.cells, self.channels, self.in_channels, self.classes
            )));
        }
        let reductions = reduction_cells(self.cells).iter().filter(|&&r| r).count();
        if self.image >> reductions < 2 {
            return Err(Error::Invalid(format!(
                "supernet: image size {} is too small for {} reduction cells",
                self.image, reductions
            )));
        }
        // factorized reduce needs even sizes at each reduction
        let mut s = self.image;
        for _ in 0..reductions {
            if s % 2 != 0 {
                return Err(Error::Invalid(format!(
                    "supernet: spatial size {s} is odd at a reduction cell (factorized reduce needs even sizes)"
                )));
            }
            s /= 2;
        }
        for ct in [CellType::Normal, CellType::Reduce] {
            for node in 0..crate::space::NUM_INTERMEDIATE {
                if !self.space.edges(ct).iter().any(|e| e.to == node) {
                    return Err(Error::Invalid(format!(
                        "space {}: node n{node} of the {} cell has no incoming edge",
                        self.space.name,
                        ct.name()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Dropout (probability `p`, inverted) on the output of every parameter-free op (pools,
/// identity) before the switches mix it, P-DARTS style: the switches of ops that need no
/// training then cannot win just because they are useful before the convolutions have
/// learnt anything. Only training tapes apply it.
#[derive(Clone, Debug)]
pub struct Handicap {
    /// Drop probability in `[0, 1)`.
    pub p: f32,
    /// Source of the masks.
    pub rng: Rng,
}

/// An edge: every candidate op and its switches.
#[derive(Clone, Debug)]
pub struct MixedEdge {
    /// Which edge of the cell this is.
    pub edge: Edge,
    ops: Vec<OpLayers>,
    /// Child switches, shape `[K]`.
    pub s: ParamId,
    /// Parent switch, shape `[1]`.
    pub s0: ParamId,
}

/// One cell of the supernet.
#[derive(Clone, Debug)]
pub struct SearchCell {
    /// Normal or reduction.
    pub cell_type: CellType,
    /// For `in1` (`c_{k-2}`) and `in0` (`c_{k-1}`).
    inputs: CellInputs,
    /// The edges in the space's order.
    pub edges: Vec<MixedEdge>,
}

/// The supernet's layers; the parameters live in a [`ParamStore`].
#[derive(Clone, Debug)]
pub struct Supernet {
    /// The shape it was built with.
    pub config: SupernetConfig,
    stem: Stem,
    /// The cells in depth order.
    pub cells: Vec<SearchCell>,
    classifier: Linear,
}

impl SearchCell {
    fn new(
        store: &mut ParamStore,
        slot: CellSlot,
        inputs: CellInputs,
        space: &SearchSpace,
        rng: &mut Rng,
    ) -> Result<Self> {
        let (name, cell_type, c) = (slot.name(), slot.cell_type, slot.c);
        let f = Flavour::Search;
        let mut edges = Vec::new();
        for (e, &edge) in space.edges(cell_type).iter().enumerate() {
            let stride = edge.stride(cell_type);
            let ops = space
                .ops
                .iter()
                .map(|&op| {
                    OpLayers::new(
                        f,
                        store,
                        &format!("{name}.edges.{e}.{}", op.name()),
                        op,
                        c,
                        stride,
                        rng,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let k = space.ops.len();
            let s = store.add(
                &format!("{name}.edges.{e}.s"),
                SWITCHES,
                Tensor::full(&[k], 1.0),
            )?;
            let s0 = store.add(
                &format!("{name}.edges.{e}.s0"),
                SWITCHES,
                Tensor::full(&[1], 1.0),
            )?;
            edges.push(MixedEdge { edge, ops, s, s0 });
        }
        Ok(SearchCell {
            cell_type,
            inputs,
            edges,
        })
    }

    /// `prev_prev` is `c_{k-2}`, `prev` is `c_{k-1}`.
    fn forward(
        &self,
        t: &mut Tape,
        store: &mut ParamStore,
        prev_prev: Var,
        prev: Var,
        handicap: &mut Option<Handicap>,
    ) -> Result<Var> {
        let states = self.inputs.forward(t, store, prev_prev, prev)?;
        Ok(self.nodes(t, store, states, handicap, None)?.out)
    }

    /// The intermediate nodes and the output of the cell from the states of its input nodes.
    ///
    /// With `reuse = Some((cache, e))` the cell is the one `cache` recorded, and only the
    /// switches of its edge `e` differ from that pass: edge `e` and every edge reading a node
    /// that changed are recomputed; every other edge's mixed output and every unchanged
    /// node's state are the cache's (`states` may then hold only what is recomputed; missing
    /// input nodes are taken from the cache). The recomputed ops see the same values as a
    /// full pass, so the output is the full pass's, bit for bit.
    fn nodes(
        &self,
        t: &mut Tape,
        store: &mut ParamStore,
        mut states: HashMap<Node, Var>,
        handicap: &mut Option<Handicap>,
        reuse: Option<(&CellCache, usize)>,
    ) -> Result<CellVars> {
        let n = crate::space::NUM_INTERMEDIATE;
        let mut relus: HashMap<Node, Var> = HashMap::new();
        let mut edges = vec![None; self.edges.len()];
        let mut changed: Vec<Node> = Vec::new();
        for node in 0..n {
            let into: Vec<usize> = (0..self.edges.len())
                .filter(|&i| self.edges[i].edge.to == node)
                .collect();
            let recompute = |i: usize| match reuse {
                None => true,
                Some((_, e)) => i == e || changed.contains(&self.edges[i].edge.from),
            };
            if let Some((cache, _)) = reuse {
                if !into.iter().any(|&i| recompute(i)) {
                    let v = t.input(cache.state(Node::Inter(node))?.clone());
                    states.insert(Node::Inter(node), v);
                    continue;
                }
            }
            let mut incoming = Vec::new();
            for &i in &into {
                let me = &self.edges[i];
                if !recompute(i) {
                    let (cache, _) = reuse.expect("only a reusing pass skips an edge");
                    incoming.push(t.input(cache.edges[i].clone()));
                    continue;
                }
                let x = match (states.get(&me.edge.from), reuse) {
                    (Some(&x), _) => x,
                    (None, Some((cache, _))) => {
                        let x = t.input(cache.state(me.edge.from)?.clone());
                        states.insert(me.edge.from, x);
                        x
                    }
                    (None, None) => {
                        return Err(Error::Invalid(format!(
                            "edge {} reads a node that is not computed yet",
                            me.edge
                        )))
                    }
                };
                let rx = relu_once(t, &mut relus, me.edge.from, x)?;
                let mut outs = Vec::with_capacity(me.ops.len());
                for op in &me.ops {
                    let y = op.forward(t, store, x, rx)?;
                    outs.push(match handicap {
                        Some(h) if op.parameter_free() => t.dropout(y, h.p, &mut h.rng)?,
                        _ => y,
                    });
                }
                let (s, s0) = (t.param(store, me.s), t.param(store, me.s0));
                let mixed = t.mixed(&outs, s, s0)?;
                edges[i] = Some(mixed);
                incoming.push(mixed);
            }
            let state = sum_terms(t, &incoming)?;
            states.insert(Node::Inter(node), state);
            changed.push(Node::Inter(node));
        }
        let outs: Vec<Var> = (0..n).map(|i| states[&Node::Inter(i)]).collect();
        let out = t.concat_channels(&outs)?;
        Ok(CellVars { out, edges, states })
    }
}

/// What [`SearchCell::nodes`] computed: the cell's output, each edge's mixed output (`None`
/// for an edge a reusing pass took from its cache) and the state of every node it read or
/// made.
struct CellVars {
    out: Var,
    edges: Vec<Option<Var>>,
    states: HashMap<Node, Var>,
}

/// One batch's pass through the first cell its change reaches, recorded by
/// [`Supernet::forward_caching`] so that [`Supernet::forward_reusing`] recomputes, for a
/// change of the switches of one edge of that cell's type, only what the change reaches:
/// the edge and the nodes after it in that cell, and the cells after it. The held-out
/// evaluations of `--derive perturb` change one edge's switches at a time.
#[derive(Clone, Debug)]
pub struct CellCache {
    /// Index of the recorded cell (the first cell of its type).
    start: usize,
    /// The recorded cell's `prev` input, the `prev_prev` of the cell after it.
    prev: Tensor,
    /// The states of the recorded cell's input and intermediate nodes.
    states: HashMap<Node, Tensor>,
    /// The mixed output of each of its edges.
    edges: Vec<Tensor>,
}

impl CellCache {
    fn state(&self, node: Node) -> Result<&Tensor> {
        self.states.get(&node).ok_or_else(|| {
            Error::Invalid(format!(
                "cell cache: no state of node {node:?} was recorded"
            ))
        })
    }
}

impl Supernet {
    /// Builds the supernet and registers its parameters (group [`WEIGHTS`]) and switches
    /// (group [`SWITCHES`], initialised to 1) in `store`.
    pub fn new(config: SupernetConfig, store: &mut ParamStore, rng: &mut Rng) -> Result<Supernet> {
        config.validate()?;
        let stem_c = 3 * config.channels;
        let stem = Stem::new(Flavour::Search, store, config.in_channels, stem_c, rng)?;
        let (cells, c_p) = build_cells(
            Flavour::Search,
            store,
            config.cells,
            stem_c,
            config.channels,
            rng,
            |store, slot, inputs, rng| {
                let width = crate::space::NUM_INTERMEDIATE * slot.c;
                Ok((
                    SearchCell::new(store, slot, inputs, &config.space, rng)?,
                    width,
                ))
            },
        )?;
        let classifier = Linear::new(store, "classifier", WEIGHTS, c_p, config.classes, true, rng)?;
        Ok(Supernet {
            config,
            stem,
            cells,
            classifier,
        })
    }

    /// Logits `[B, classes]` for images `[B, in_channels, image, image]`.
    pub fn forward(&self, t: &mut Tape, store: &mut ParamStore, x: Var) -> Result<Var> {
        self.forward_with(t, store, x, None)
    }

    /// [`Supernet::forward`] with an optional [`Handicap`] on the parameter-free ops.
    pub fn forward_with(
        &self,
        t: &mut Tape,
        store: &mut ParamStore,
        x: Var,
        mut handicap: Option<Handicap>,
    ) -> Result<Var> {
        let s = self.stem.forward(t, store, x)?;
        self.cells_and_head(t, store, 0, s, s, &mut handicap)
    }

    /// Cells `from..` on the states `pp` (`c_{k-2}`) and `p` (`c_{k-1}`) of cell `from`'s
    /// inputs, then global pooling and the classifier: the logits.
    fn cells_and_head(
        &self,
        t: &mut Tape,
        store: &mut ParamStore,
        from: usize,
        mut pp: Var,
        mut p: Var,
        handicap: &mut Option<Handicap>,
    ) -> Result<Var> {
        for cell in &self.cells[from..] {
            let out = cell.forward(t, store, pp, p, handicap)?;
            pp = p;
            p = out;
        }
        let pooled = t.global_avg_pool(p)?;
        self.classifier.forward(t, store, pooled)
    }

    /// [`Supernet::forward`], also recording cell `start`'s pass in a [`CellCache`].
    pub fn forward_caching(
        &self,
        t: &mut Tape,
        store: &mut ParamStore,
        x: Var,
        start: usize,
    ) -> Result<(Var, CellCache)> {
        if start >= self.cells.len() {
            return Err(Error::Invalid(format!(
                "cell cache: cell {start} of a supernet with {} cells",
                self.cells.len()
            )));
        }
        let s = self.stem.forward(t, store, x)?;
        let (mut pp, mut p) = (s, s);
        for cell in &self.cells[..start] {
            let out = cell.forward(t, store, pp, p, &mut None)?;
            pp = p;
            p = out;
        }
        let cell = &self.cells[start];
        let states = cell.inputs.forward(t, store, pp, p)?;
        let vars = cell.nodes(t, store, states, &mut None, None)?;
        let edges = vars
            .edges
            .iter()
            .map(|v| v.map(|v| t.value(v).clone()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::Invalid("cell cache: an edge was not computed".into()))?;
        let states = vars
            .states
            .iter()
            .map(|(&node, &v)| (node, t.value(v).clone()))
            .collect();
        let cache = CellCache {
            start,
            prev: t.value(p).clone(),
            states,
            edges,
        };
        let logits = self.cells_and_head(t, store, start + 1, p, vars.out, &mut None)?;
        Ok((logits, cache))
    }

    /// The logits of the batch `cache` recorded, after the switches of edge `edge` of the
    /// recorded cell's type (in any of its cells) changed and nothing else: the recorded
    /// cell recomputes that edge and what depends on it, the cells after it run in full.
    /// Bit for bit the logits of [`Supernet::forward`] on that batch.
    pub fn forward_reusing(
        &self,
        t: &mut Tape,
        store: &mut ParamStore,
        cache: &CellCache,
        edge: usize,
    ) -> Result<Var> {
        let cell = self.cells.get(cache.start).ok_or_else(|| {
            Error::Invalid(format!(
                "cell cache: no cell {} in this supernet",
                cache.start
            ))
        })?;
        if edge >= cell.edges.len() || cache.edges.len() != cell.edges.len() {
            return Err(Error::Invalid(format!(
                "cell cache: edge {edge} of a cell with {} edges ({} recorded)",
                cell.edges.len(),
                cache.edges.len()
            )));
        }
        let vars = cell.nodes(t, store, HashMap::new(), &mut None, Some((cache, edge)))?;
        let prev = t.input(cache.prev.clone());
        self.cells_and_head(t, store, cache.start + 1, prev, vars.out, &mut None)
    }

    /// Indices of the cells of one type, in depth order (the members of each switch group).
    pub fn cells_of(&self, ct: CellType) -> Vec<usize> {
        self.cells
            .iter()
            .enumerate()
            .filter(|(_, c)| c.cell_type == ct)
            .map(|(i, _)| i)
            .collect()
    }

    /// Number of candidate operations per edge.
    pub fn n_ops(&self) -> usize {
        self.config.space.ops.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(
        space: SearchSpace,
        c: usize,
        cells: usize,
        in_c: usize,
        image: usize,
    ) -> (Supernet, ParamStore) {
        let mut store = ParamStore::new();
        let mut rng = Rng::new(0);
        let cfg = SupernetConfig {
            space,
            channels: c,
            cells,
            in_channels: in_c,
            image,
            classes: 10,
        };
        (Supernet::new(cfg, &mut store, &mut rng).unwrap(), store)
    }

    /// DARTS' reference supernet (`model_search.Network(16, 10, 8)`) has 1,930,618 weights.
    #[test]
    fn darts_space_parameter_count_matches_reference() {
        let (_, store) = net(SearchSpace::darts(), 16, 8, 3, 32);
        assert_eq!(store.count(Some(WEIGHTS)), 1_930_618);
        // 8 cells x 14 edges x (7 children + 1 parent)
        assert_eq!(store.count(Some(SWITCHES)), 8 * 14 * 8);
    }

    #[test]
    fn forward_shapes_on_fashion_mnist_and_cifar() {
        for (in_c, image) in [(1, 28), (3, 32)] {
            let (n, mut store) = net(SearchSpace::bayesnas(), 4, 5, in_c, image);
            let mut tape = Tape::new();
            let mut rng = Rng::new(1);
            let x = tape.input(Tensor::randn(&[2, in_c, image, image], 1.0, &mut rng));
            let y = n.forward(&mut tape, &mut store, x).unwrap();
            assert_eq!(tape.value(y).shape(), &[2, 10]);
            assert!(tape.value(y).all_finite());
        }
    }

    #[test]
    fn rejects_impossible_shapes() {
        let mut store = ParamStore::new();
        let mut rng = Rng::new(0);
        let cfg = SupernetConfig {
            space: SearchSpace::bayesnas(),
            channels: 4,
            cells: 8,
            in_channels: 1,
            image: 6,
            classes: 10,
        };
        assert!(Supernet::new(cfg, &mut store, &mut rng).is_err());
        let cfg = SupernetConfig {
            space: SearchSpace::bayesnas(),
            channels: 0,
            cells: 8,
            in_channels: 1,
            image: 28,
            classes: 10,
        };
        assert!(Supernet::new(cfg, &mut store, &mut rng).is_err());
    }
}
