//! Search spaces as data: candidate operations, cell nodes, edges and the two built-in spaces.
//!
//! A cell has two input states and [`NUM_INTERMEDIATE`] intermediate nodes. Each intermediate
//! node sums its incoming edges and the cell output concatenates the intermediate nodes.
//!
//! # Input naming and the DARTS mapping
//!
//! This project names the cell inputs as the method note does:
//!
//! | ours  | meaning                                      | DARTS state | DARTS genotype index |
//! |-------|----------------------------------------------|-------------|----------------------|
//! | `in0` | output of the previous cell, `c_{k-1}`       | `s1`        | `1`                  |
//! | `in1` | output of the cell before that, `c_{k-2}`    | `s0`        | `0`                  |
//! | `nI`  | intermediate node `I` (0..4)                 | `states[I+2]` | `I + 2`            |
//!
//! DARTS' code and genotype strings use the opposite order for the two inputs (`s0` is the
//! cell two back), so [`Node::darts_index`] and [`Node::from_darts_index`] swap them. Every
//! conversion to or from a DARTS genotype string goes through those two functions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Number of intermediate nodes in a cell (`n0..n3`; DARTS' `steps = 4`).
pub const NUM_INTERMEDIATE: usize = 4;

/// Errors for names and indices of the search-space vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpaceError {
    /// An operation name that is not one of the candidate operations.
    #[error("unknown operation '{name}' (valid: {valid})")]
    UnknownOp {
        /// The name as given.
        name: String,
        /// Comma-separated valid names.
        valid: String,
    },
    /// DARTS' `none` (zero) operation, which is not a candidate here.
    #[error(
        "'none' is not a candidate operation: an absent edge is expressed by leaving the edge out \
         (BayesNAS zeroes an edge through its parent switch)"
    )]
    NoneOp,
    /// A node name that does not exist (`in0`, `in1`, `n0`..`n3` are valid).
    #[error("unknown node '{name}' (valid: in0, in1, n0..n{max})", max = NUM_INTERMEDIATE - 1)]
    UnknownNode {
        /// The name as given.
        name: String,
    },
    /// A DARTS state index outside `0..2+NUM_INTERMEDIATE`.
    #[error("DARTS node index {index} out of range (valid: 0..={max})", max = NUM_INTERMEDIATE + 1)]
    DartsIndex {
        /// The index as given.
        index: usize,
    },
    /// A cell type name other than `normal` / `reduce`.
    #[error("unknown cell type '{name}' (valid: normal, reduce)")]
    UnknownCellType {
        /// The name as given.
        name: String,
    },
    /// A search-space name that is not built in.
    #[error("unknown search space '{name}' (valid: {valid})")]
    UnknownSpace {
        /// The name as given.
        name: String,
        /// Comma-separated valid names.
        valid: String,
    },
    /// An edge that cannot exist in a cell (target out of range, or source not earlier).
    #[error("invalid edge {from}->n{to}: {reason}")]
    InvalidEdge {
        /// Source node.
        from: Node,
        /// Target intermediate node index.
        to: usize,
        /// Why it is invalid.
        reason: String,
    },
    /// A space that lists the same edge twice in one cell type.
    #[error("duplicate edge {from}->n{to} in the {cell} cells")]
    DuplicateEdge {
        /// Source node.
        from: Node,
        /// Target intermediate node index.
        to: usize,
        /// Cell type.
        cell: CellType,
    },
    /// A space with no candidate operations or a repeated operation.
    #[error("invalid operation list: {0}")]
    InvalidOps(String),
}

/// A candidate operation on an edge (the DARTS definitions; see the method note, section 2).
///
/// The order of [`Op::ALL`] is the authors' switch order (`sep_3, sep_5, dil_3, dil_5,
/// max_pool, avg_pool, ident`). DARTS' `none` is deliberately absent: "zero" is expressed by an
/// edge's parent switch, and parsing `none` gives [`SpaceError::NoneOp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `sep_conv_3x3`: two stacked ReLU-depthwise 3x3-pointwise-BN blocks.
    SepConv3x3,
    /// `sep_conv_5x5`: as above with 5x5 depthwise kernels.
    SepConv5x5,
    /// `dil_conv_3x3`: ReLU, depthwise 3x3 with dilation 2, pointwise, BN.
    DilConv3x3,
    /// `dil_conv_5x5`: ReLU, depthwise 5x5 with dilation 2, pointwise, BN.
    DilConv5x5,
    /// `max_pool_3x3`: 3x3 max pooling, padding 1.
    MaxPool3x3,
    /// `avg_pool_3x3`: 3x3 average pooling, padding 1, padding not counted.
    AvgPool3x3,
    /// `skip_connect`: identity, or factorized reduce with stride 2.
    SkipConnect,
}

impl Op {
    /// All candidate operations in the canonical order.
    pub const ALL: [Op; 7] = [
        Op::SepConv3x3,
        Op::SepConv5x5,
        Op::DilConv3x3,
        Op::DilConv5x5,
        Op::MaxPool3x3,
        Op::AvgPool3x3,
        Op::SkipConnect,
    ];

    /// The exact DARTS name, e.g. `"sep_conv_3x3"`.
    pub fn name(self) -> &'static str {
        match self {
            Op::SepConv3x3 => "sep_conv_3x3",
            Op::SepConv5x5 => "sep_conv_5x5",
            Op::DilConv3x3 => "dil_conv_3x3",
            Op::DilConv5x5 => "dil_conv_5x5",
            Op::MaxPool3x3 => "max_pool_3x3",
            Op::AvgPool3x3 => "avg_pool_3x3",
            Op::SkipConnect => "skip_connect",
        }
    }

    /// Comma-separated list of all valid names (used in error messages).
    pub fn valid_names() -> String {
        Op::ALL.map(Op::name).join(", ")
    }

    /// True for the parameter-free operations (pools and skip, except factorized reduce).
    pub fn is_parameter_free(self) -> bool {
        matches!(self, Op::MaxPool3x3 | Op::AvgPool3x3 | Op::SkipConnect)
    }
}

impl FromStr for Op {
    type Err = SpaceError;

    /// Parses an exact DARTS operation name; `none` gives [`SpaceError::NoneOp`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "none" {
            return Err(SpaceError::NoneOp);
        }
        Op::ALL
            .into_iter()
            .find(|op| op.name() == s)
            .ok_or_else(|| SpaceError::UnknownOp {
                name: s.to_string(),
                valid: Op::valid_names(),
            })
    }
}

/// A node of a cell: one of the two inputs or an intermediate node.
///
/// Names: `in0`, `in1`, `n0`..`n3`. See the module documentation for how `In0`/`In1` map to
/// DARTS' indices (they are swapped: our `In0` is DARTS `1`, our `In1` is DARTS `0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// The previous cell's output `c_{k-1}` (pre-processed). DARTS index 1 (`s1`).
    In0,
    /// The output of the cell before that, `c_{k-2}` (pre-processed). DARTS index 0 (`s0`).
    In1,
    /// Intermediate node `i` in `0..NUM_INTERMEDIATE`. DARTS index `i + 2`.
    Inter(usize),
}

impl Node {
    /// True for `in0` and `in1`.
    pub fn is_input(self) -> bool {
        matches!(self, Node::In0 | Node::In1)
    }

    /// The intermediate index, or `None` for an input.
    pub fn intermediate(self) -> Option<usize> {
        match self {
            Node::Inter(i) => Some(i),
            _ => None,
        }
    }

    /// The index of this node in DARTS' state list and genotype strings:
    /// `In1 -> 0` (`s0`, `c_{k-2}`), `In0 -> 1` (`s1`, `c_{k-1}`), `Inter(i) -> i + 2`.
    pub fn darts_index(self) -> usize {
        match self {
            Node::In1 => 0,
            Node::In0 => 1,
            Node::Inter(i) => i.saturating_add(2),
        }
    }

    /// Inverse of [`Node::darts_index`]: `0 -> In1`, `1 -> In0`, `k >= 2 -> Inter(k - 2)`.
    pub fn from_darts_index(index: usize) -> Result<Node, SpaceError> {
        match index {
            0 => Ok(Node::In1),
            1 => Ok(Node::In0),
            k if k < NUM_INTERMEDIATE + 2 => Ok(Node::Inter(k - 2)),
            _ => Err(SpaceError::DartsIndex { index }),
        }
    }

    /// Whether this node is a valid node name (intermediate index in range).
    pub fn is_valid(self) -> bool {
        match self {
            Node::Inter(i) => i < NUM_INTERMEDIATE,
            _ => true,
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::In0 => f.write_str("in0"),
            Node::In1 => f.write_str("in1"),
            Node::Inter(i) => write!(f, "n{i}"),
        }
    }
}

impl FromStr for Node {
    type Err = SpaceError;

    /// Parses `in0`, `in1` or `n0`..`n3`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || SpaceError::UnknownNode {
            name: s.to_string(),
        };
        match s {
            "in0" => Ok(Node::In0),
            "in1" => Ok(Node::In1),
            _ => {
                let digits = s.strip_prefix('n').ok_or_else(err)?;
                // Only canonical decimal spellings ("n0", not "n00" or "n+1").
                if digits.is_empty()
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                    || (digits.len() > 1 && digits.starts_with('0'))
                {
                    return Err(err());
                }
                let i: usize = digits.parse().map_err(|_| err())?;
                if i < NUM_INTERMEDIATE {
                    Ok(Node::Inter(i))
                } else {
                    Err(err())
                }
            }
        }
    }
}

/// The two cell types; all cells of one type share their switch groups and genotype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CellType {
    /// Normal cell (keeps resolution).
    Normal,
    /// Reduction cell (edges leaving the inputs have stride 2).
    Reduce,
}

impl CellType {
    /// Both cell types, normal first.
    pub const ALL: [CellType; 2] = [CellType::Normal, CellType::Reduce];

    /// `"normal"` or `"reduce"`.
    pub fn name(self) -> &'static str {
        match self {
            CellType::Normal => "normal",
            CellType::Reduce => "reduce",
        }
    }
}

impl FromStr for CellType {
    type Err = SpaceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "normal" => Ok(CellType::Normal),
            "reduce" => Ok(CellType::Reduce),
            _ => Err(SpaceError::UnknownCellType {
                name: s.to_string(),
            }),
        }
    }
}

/// `Display` as the type's `name()`.
macro_rules! display_by_name {
    ($($t:ty),+) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    )+};
}

display_by_name!(Op, CellType);

/// `Serialize` as the `Display` name, `Deserialize` through `FromStr` (with its error
/// message): ops, nodes and cell types are plain strings in our JSON files.
macro_rules! serde_by_name {
    ($($t:ty),+) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )+};
}

serde_by_name!(Op, Node, CellType);

/// A directed edge of a cell, from a node into intermediate node `to` (`0..NUM_INTERMEDIATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Edge {
    /// Source node (an input or an earlier intermediate node).
    pub from: Node,
    /// Target intermediate node index.
    pub to: usize,
}

impl Edge {
    /// Creates an edge without checking it; see [`Edge::validate`].
    pub const fn new(from: Node, to: usize) -> Edge {
        Edge { from, to }
    }

    /// Checks that the target exists and the source is an input or an earlier node.
    pub fn validate(&self) -> Result<(), SpaceError> {
        let invalid = |reason: String| SpaceError::InvalidEdge {
            from: self.from,
            to: self.to,
            reason,
        };
        if self.to >= NUM_INTERMEDIATE {
            return Err(invalid(format!(
                "target n{} does not exist (nodes n0..n{})",
                self.to,
                NUM_INTERMEDIATE - 1
            )));
        }
        match self.from {
            Node::Inter(i) if i >= NUM_INTERMEDIATE => {
                Err(invalid(format!("source n{i} does not exist")))
            }
            Node::Inter(i) if i >= self.to => Err(invalid(format!(
                "source n{i} is not earlier than target n{}",
                self.to
            ))),
            _ => Ok(()),
        }
    }

    /// Stride of the edge: 2 for edges leaving an input of a reduction cell, else 1.
    pub fn stride(&self, cell: CellType) -> usize {
        if cell == CellType::Reduce && self.from.is_input() {
            2
        } else {
            1
        }
    }
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->n{}", self.from, self.to)
    }
}

/// A search space: the edges of each cell type and the candidate operations on every edge.
///
/// Edge order matters: it defines the switch-group layout (see
/// [`crate::bayes::GroupKind::index`]) and is kept stable for the built-in spaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchSpace {
    /// Space name (`"bayesnas"` or `"darts"` for the built-in ones).
    pub name: String,
    /// Edges of normal cells.
    pub normal: Vec<Edge>,
    /// Edges of reduction cells.
    pub reduce: Vec<Edge>,
    /// Candidate operations on every edge, in switch order.
    pub ops: Vec<Op>,
}

impl SearchSpace {
    /// Names of the built-in spaces.
    pub const NAMES: [&'static str; 2] = ["bayesnas", "darts"];

    /// The authors' space (8 edges per cell type, method note section 2), in the authors'
    /// order:
    /// - normal: in0->n0, in0->n1, in0->n2, in1->n0, in1->n1, in1->n2, in1->n3, n0->n3
    /// - reduce: in0->n0, in1->n0, in1->n1, in1->n2, in1->n3, n0->n1, n0->n2, n0->n3
    pub fn bayesnas() -> SearchSpace {
        use Node::{In0, In1, Inter};
        let e = Edge::new;
        SearchSpace {
            name: "bayesnas".to_string(),
            normal: vec![
                e(In0, 0),
                e(In0, 1),
                e(In0, 2),
                e(In1, 0),
                e(In1, 1),
                e(In1, 2),
                e(In1, 3),
                e(Inter(0), 3),
            ],
            reduce: vec![
                e(In0, 0),
                e(In1, 0),
                e(In1, 1),
                e(In1, 2),
                e(In1, 3),
                e(Inter(0), 1),
                e(Inter(0), 2),
                e(Inter(0), 3),
            ],
            ops: Op::ALL.to_vec(),
        }
    }

    /// The DARTS space: 14 edges per cell type, node `j` has an edge from both inputs and from
    /// every earlier intermediate node.
    ///
    /// Order is DARTS' own (its `_ops` / alpha rows): for `j = 0..4`, sources by DARTS index
    /// `0, 1, 2, ..., j+1`, i.e. `in1` (DARTS `s0`) first, then `in0` (DARTS `s1`), then
    /// `n0..n(j-1)`. So edge `k` of this space is row `k` of DARTS' `alphas_normal`.
    pub fn darts() -> SearchSpace {
        let mut edges = Vec::with_capacity(14);
        for to in 0..NUM_INTERMEDIATE {
            for darts_src in 0..to + 2 {
                // Infallible: darts_src < to + 2 <= NUM_INTERMEDIATE + 1.
                let from = match darts_src {
                    0 => Node::In1,
                    1 => Node::In0,
                    k => Node::Inter(k - 2),
                };
                edges.push(Edge::new(from, to));
            }
        }
        SearchSpace {
            name: "darts".to_string(),
            normal: edges.clone(),
            reduce: edges,
            ops: Op::ALL.to_vec(),
        }
    }

    /// A built-in space by name (`"bayesnas"` or `"darts"`).
    pub fn by_name(name: &str) -> Result<SearchSpace, SpaceError> {
        match name {
            "bayesnas" => Ok(SearchSpace::bayesnas()),
            "darts" => Ok(SearchSpace::darts()),
            _ => Err(SpaceError::UnknownSpace {
                name: name.to_string(),
                valid: SearchSpace::NAMES.join(", "),
            }),
        }
    }

    /// The edges of one cell type.
    pub fn edges(&self, cell: CellType) -> &[Edge] {
        match cell {
            CellType::Normal => &self.normal,
            CellType::Reduce => &self.reduce,
        }
    }

    /// Position of `edge` in the edge list of `cell`, if present.
    pub fn edge_index(&self, cell: CellType, edge: Edge) -> Option<usize> {
        self.edges(cell).iter().position(|e| *e == edge)
    }

    /// Checks every edge, that no edge repeats, and that the op list is non-empty and unique.
    pub fn validate(&self) -> Result<(), SpaceError> {
        if self.ops.is_empty() {
            return Err(SpaceError::InvalidOps("no candidate operations".into()));
        }
        for (i, op) in self.ops.iter().enumerate() {
            if self.ops[..i].contains(op) {
                return Err(SpaceError::InvalidOps(format!("{op} listed twice")));
            }
        }
        for cell in CellType::ALL {
            let edges = self.edges(cell);
            for (i, e) in edges.iter().enumerate() {
                e.validate()?;
                if edges[..i].contains(e) {
                    return Err(SpaceError::DuplicateEdge {
                        from: e.from,
                        to: e.to,
                        cell,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Which cells of an `n_cells`-cell network are reduction cells: DARTS' rule
/// `i in [n // 3, 2 * n // 3]`. For 8 cells: `N N R N N R N N`; for 20: reductions at 6 and 13.
pub fn reduction_cells(n_cells: usize) -> Vec<bool> {
    (0..n_cells)
        .map(|i| i == n_cells / 3 || i == 2 * n_cells / 3)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_names_round_trip_and_errors() {
        for op in Op::ALL {
            assert_eq!(op.name().parse::<Op>().unwrap(), op);
            assert_eq!(op.to_string(), op.name());
        }
        let err = "conv_7x7".parse::<Op>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("conv_7x7"), "{msg}");
        for op in Op::ALL {
            assert!(msg.contains(op.name()), "{msg}");
        }
        assert_eq!("none".parse::<Op>().unwrap_err(), SpaceError::NoneOp);
    }

    #[test]
    fn node_names() {
        for (s, n) in [
            ("in0", Node::In0),
            ("in1", Node::In1),
            ("n0", Node::Inter(0)),
            ("n3", Node::Inter(3)),
        ] {
            assert_eq!(s.parse::<Node>().unwrap(), n);
            assert_eq!(n.to_string(), s);
        }
        for bad in ["n4", "n7", "n", "n01", "in2", "x", "", "n-1", "n+1"] {
            assert!(bad.parse::<Node>().is_err(), "{bad}");
        }
    }

    /// Pins the naming convention: our `in0` is the previous cell (`c_{k-1}`), which DARTS
    /// calls `s1` and writes as index 1 in genotype strings; our `in1` is `c_{k-2}` = DARTS 0.
    #[test]
    fn darts_index_mapping_is_swapped_for_inputs() {
        assert_eq!(Node::In0.darts_index(), 1);
        assert_eq!(Node::In1.darts_index(), 0);
        assert_eq!(Node::Inter(0).darts_index(), 2);
        assert_eq!(Node::Inter(3).darts_index(), 5);
        assert_eq!(Node::from_darts_index(0).unwrap(), Node::In1);
        assert_eq!(Node::from_darts_index(1).unwrap(), Node::In0);
        assert_eq!(Node::from_darts_index(5).unwrap(), Node::Inter(3));
        assert!(Node::from_darts_index(6).is_err());
        for k in 0..6 {
            assert_eq!(Node::from_darts_index(k).unwrap().darts_index(), k);
        }
    }

    #[test]
    fn bayesnas_space_matches_note() {
        let s = SearchSpace::bayesnas();
        s.validate().unwrap();
        let names = |edges: &[Edge]| edges.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(&s.normal),
            [
                "in0->n0", "in0->n1", "in0->n2", "in1->n0", "in1->n1", "in1->n2", "in1->n3",
                "n0->n3"
            ]
        );
        assert_eq!(
            names(&s.reduce),
            ["in0->n0", "in1->n0", "in1->n1", "in1->n2", "in1->n3", "n0->n1", "n0->n2", "n0->n3"]
        );
        assert_eq!(s.ops, Op::ALL);
    }

    #[test]
    fn darts_space_has_14_edges_in_darts_order() {
        let s = SearchSpace::darts();
        s.validate().unwrap();
        assert_eq!(s.normal.len(), 14);
        assert_eq!(s.normal, s.reduce);
        // DARTS alpha row k corresponds to (node j, source index i) in nested-loop order.
        let mut k = 0;
        for j in 0..4 {
            for i in 0..j + 2 {
                assert_eq!(s.normal[k].to, j);
                assert_eq!(s.normal[k].from.darts_index(), i);
                k += 1;
            }
        }
        assert_eq!(s.normal[0].from, Node::In1);
        assert_eq!(s.normal[1].from, Node::In0);
    }

    #[test]
    fn by_name_and_unknown() {
        assert_eq!(SearchSpace::by_name("darts").unwrap().name, "darts");
        assert_eq!(SearchSpace::by_name("bayesnas").unwrap().name, "bayesnas");
        let msg = SearchSpace::by_name("enas").unwrap_err().to_string();
        assert!(msg.contains("bayesnas") && msg.contains("darts"), "{msg}");
    }

    #[test]
    fn validation_rejects_bad_edges() {
        assert!(Edge::new(Node::Inter(2), 1).validate().is_err());
        assert!(Edge::new(Node::Inter(1), 1).validate().is_err());
        assert!(Edge::new(Node::In0, 4).validate().is_err());
        assert!(Edge::new(Node::Inter(7), 3).validate().is_err());
        let mut s = SearchSpace::bayesnas();
        s.reduce.push(s.reduce[0]);
        assert!(matches!(
            s.validate(),
            Err(SpaceError::DuplicateEdge { .. })
        ));
        let mut s = SearchSpace::bayesnas();
        s.ops.push(Op::SkipConnect);
        assert!(s.validate().is_err());
    }

    #[test]
    fn reduction_layout() {
        let r = reduction_cells(8);
        assert_eq!(r, [false, false, true, false, false, true, false, false]);
        let r = reduction_cells(20);
        let idx: Vec<usize> = (0..20).filter(|&i| r[i]).collect();
        assert_eq!(idx, [6, 13]);
        assert!(reduction_cells(0).is_empty());
    }

    #[test]
    fn strides() {
        let e = Edge::new(Node::In1, 0);
        assert_eq!(e.stride(CellType::Reduce), 2);
        assert_eq!(e.stride(CellType::Normal), 1);
        assert_eq!(Edge::new(Node::Inter(0), 1).stride(CellType::Reduce), 1);
    }
}
