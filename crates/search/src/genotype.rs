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

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::space::{CellType, Node, Op, SearchSpace, NUM_INTERMEDIATE};

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

    /// The DARTS `(op, input)` pairs node by node, or `None` unless every intermediate node has
    /// exactly 2 pairs (several ops on one edge count as separate pairs).
    pub fn darts_pairs(&self) -> Option<Vec<(Op, usize)>> {
        let mut pairs = Vec::with_capacity(2 * NUM_INTERMEDIATE);
        for j in 0..NUM_INTERMEDIATE {
            let before = pairs.len();
            for e in self.incoming(j) {
                for o in &e.ops {
                    pairs.push((o.op, e.from.darts_index()));
                }
            }
            if pairs.len() - before != 2 {
                return None;
            }
        }
        Some(pairs)
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

#[derive(Serialize)]
struct EdgeOut<'a> {
    from: Node,
    to: Node,
    ops: &'a [KeptOp],
}

#[derive(Serialize)]
struct CellOut<'a> {
    edges: Vec<EdgeOut<'a>>,
    concat: Vec<Node>,
}

impl<'a> CellOut<'a> {
    fn new(cell: &'a CellGenotype) -> CellOut<'a> {
        CellOut {
            edges: cell
                .edges
                .iter()
                .map(|e| EdgeOut {
                    from: e.from,
                    to: Node::Inter(e.to),
                    ops: &e.ops,
                })
                .collect(),
            concat: cell.concat.iter().map(|&j| Node::Inter(j)).collect(),
        }
    }
}

#[derive(Serialize)]
struct FileOut<'a> {
    format: &'static str,
    version: u64,
    space: &'a str,
    normal: CellOut<'a>,
    reduce: CellOut<'a>,
    darts: Option<String>,
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

    fn file_out(&self) -> FileOut<'_> {
        FileOut {
            format: FORMAT,
            version: VERSION,
            space: &self.space,
            normal: CellOut::new(&self.normal),
            reduce: CellOut::new(&self.reduce),
            darts: self.to_darts_string(),
        }
    }

    /// Pretty JSON in the documented schema (validates first).
    pub fn to_json(&self) -> Result<String, GenotypeError> {
        self.validate()?;
        serde_json::to_string_pretty(&self.file_out())
            .map_err(|e| GenotypeError::Json(e.to_string()))
    }

    /// Reads the documented JSON schema; errors name the offending field.
    pub fn from_json(text: &str) -> Result<Genotype, GenotypeError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| GenotypeError::Json(e.to_string()))?;
        Genotype::from_json_value(&v)
    }

    /// As [`Genotype::from_json`], from an already parsed JSON value.
    pub fn from_json_value(v: &Value) -> Result<Genotype, GenotypeError> {
        let obj = as_object(v, "(root)")?;
        check_keys(
            obj,
            "",
            &["format", "version", "space", "normal", "reduce", "darts"],
        )?;
        let format = as_str(get(obj, "", "format")?, "format")?;
        if format != FORMAT {
            return Err(field_err(
                "format",
                format!("expected \"{FORMAT}\", got \"{format}\""),
            ));
        }
        let version = get(obj, "", "version")?;
        if version.as_u64() != Some(VERSION) {
            return Err(field_err(
                "version",
                format!("unsupported version {version} (this build reads {VERSION})"),
            ));
        }
        let space = as_str(get(obj, "", "space")?, "space")?.to_string();
        let normal = cell_from_json(get(obj, "", "normal")?, "normal")?;
        let reduce = cell_from_json(get(obj, "", "reduce")?, "reduce")?;
        let g = Genotype {
            space,
            normal,
            reduce,
        };
        g.validate()?;
        match obj.get("darts") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                let d = Genotype::from_darts_string(s)
                    .map_err(|e| field_err("darts", e.to_string()))?;
                for ct in CellType::ALL {
                    if d.cell(ct).structure() != g.cell(ct).structure()
                        || d.cell(ct).concat != g.cell(ct).concat
                    {
                        return Err(field_err(
                            "darts",
                            format!("the DARTS string's {ct} cell differs from \"{ct}\""),
                        ));
                    }
                }
            }
            Some(other) => {
                return Err(field_err(
                    "darts",
                    format!("expected a string or null, got {other}"),
                ))
            }
        }
        Ok(g)
    }

    /// The DARTS `Genotype(...)` string, or `None` unless the genotype is valid and every
    /// intermediate node of both cells has exactly 2 `(op, input)` pairs.
    pub fn to_darts_string(&self) -> Option<String> {
        self.validate().ok()?;
        let normal = self.normal.darts_pairs()?;
        let reduce = self.reduce.darts_pairs()?;
        let pairs = |p: &[(Op, usize)]| {
            p.iter()
                .map(|(op, i)| format!("('{op}', {i})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let concat = |c: &[usize]| {
            c.iter()
                .map(|j| (j + 2).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut s = String::new();
        let _ = write!(
            s,
            "Genotype(normal=[{}], normal_concat=[{}], reduce=[{}], reduce_concat=[{}])",
            pairs(&normal),
            concat(&self.normal.concat),
            pairs(&reduce),
            concat(&self.reduce.concat)
        );
        Some(s)
    }

    /// Parses a DARTS `Genotype(...)` string (keyword fields in any order, lists or
    /// `range(a, b)` for the concats, single or double quotes, trailing commas). The result has
    /// `space = "darts"` and no relevances.
    pub fn from_darts_string(text: &str) -> Result<Genotype, GenotypeError> {
        darts::parse(text)
    }
}

/// Serialises to the documented schema (so a genotype can be embedded in other serde
/// documents); an invalid genotype is a serialisation error.
impl Serialize for Genotype {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.validate().map_err(serde::ser::Error::custom)?;
        self.file_out().serialize(serializer)
    }
}

/// Deserialises the documented schema with the same checks as [`Genotype::from_json`].
impl<'de> serde::Deserialize<'de> for Genotype {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(deserializer)?;
        Genotype::from_json_value(&v).map_err(serde::de::Error::custom)
    }
}

fn get<'a>(
    obj: &'a Map<String, Value>,
    prefix: &str,
    key: &str,
) -> Result<&'a Value, GenotypeError> {
    obj.get(key)
        .ok_or_else(|| field_err(join(prefix, key), "missing field"))
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn check_keys(
    obj: &Map<String, Value>,
    prefix: &str,
    allowed: &[&str],
) -> Result<(), GenotypeError> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(field_err(
                join(prefix, k),
                format!("unknown field (expected one of: {})", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, GenotypeError> {
    v.as_object()
        .ok_or_else(|| field_err(path, format!("expected an object, got {v}")))
}

fn as_array<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>, GenotypeError> {
    v.as_array()
        .ok_or_else(|| field_err(path, format!("expected an array, got {v}")))
}

fn as_str<'a>(v: &'a Value, path: &str) -> Result<&'a str, GenotypeError> {
    v.as_str()
        .ok_or_else(|| field_err(path, format!("expected a string, got {v}")))
}

fn node_from_json(v: &Value, path: &str) -> Result<Node, GenotypeError> {
    as_str(v, path)?
        .parse::<Node>()
        .map_err(|e| field_err(path, e.to_string()))
}

fn target_from_json(v: &Value, path: &str) -> Result<usize, GenotypeError> {
    match node_from_json(v, path)? {
        Node::Inter(j) => Ok(j),
        n => Err(field_err(
            path,
            format!(
                "an edge cannot go into the input node {n} (targets are n0..n{})",
                NUM_INTERMEDIATE - 1
            ),
        )),
    }
}

fn cell_from_json(v: &Value, path: &str) -> Result<CellGenotype, GenotypeError> {
    let obj = as_object(v, path)?;
    check_keys(obj, path, &["edges", "concat"])?;
    let mut cell = CellGenotype::default();
    let edges_path = join(path, "edges");
    for (i, ev) in as_array(get(obj, path, "edges")?, &edges_path)?
        .iter()
        .enumerate()
    {
        let p = format!("{edges_path}[{i}]");
        let eo = as_object(ev, &p)?;
        check_keys(eo, &p, &["from", "to", "ops"])?;
        let from = node_from_json(get(eo, &p, "from")?, &join(&p, "from"))?;
        let to = target_from_json(get(eo, &p, "to")?, &join(&p, "to"))?;
        let ops_path = join(&p, "ops");
        let mut ops = Vec::new();
        for (k, ov) in as_array(get(eo, &p, "ops")?, &ops_path)?.iter().enumerate() {
            let op_path = format!("{ops_path}[{k}]");
            let oo = as_object(ov, &op_path)?;
            check_keys(oo, &op_path, &["op", "relevance"])?;
            let name_path = join(&op_path, "op");
            let op = as_str(get(oo, &op_path, "op")?, &name_path)?
                .parse::<Op>()
                .map_err(|e| field_err(&name_path, e.to_string()))?;
            let relevance = match oo.get("relevance") {
                None | Some(Value::Null) => None,
                Some(r) => Some(r.as_f64().ok_or_else(|| {
                    field_err(
                        join(&op_path, "relevance"),
                        format!("expected a number or null, got {r}"),
                    )
                })?),
            };
            ops.push(KeptOp { op, relevance });
        }
        cell.edges.push(KeptEdge { from, to, ops });
    }
    let concat_path = join(path, "concat");
    for (i, nv) in as_array(get(obj, path, "concat")?, &concat_path)?
        .iter()
        .enumerate()
    {
        cell.concat
            .push(target_from_json(nv, &format!("{concat_path}[{i}]"))?);
    }
    Ok(cell)
}

/// A small recursive-descent parser for DARTS' `Genotype(...)` repr.
mod darts {
    use super::{CellGenotype, Genotype, GenotypeError, KeptEdge, KeptOp};
    use crate::space::{Node, Op, SpaceError, NUM_INTERMEDIATE};

    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Ident(String),
        Str(String),
        Int(usize),
        Punct(char),
        End,
    }

    fn describe(t: &Tok) -> String {
        match t {
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Str(s) => format!("string '{s}'"),
            Tok::Int(i) => format!("number {i}"),
            Tok::Punct(c) => format!("'{c}'"),
            Tok::End => "end of input".into(),
        }
    }

    struct Lexer {
        toks: Vec<(Tok, usize)>,
        at: usize,
    }

    fn err(pos: usize, msg: impl Into<String>) -> GenotypeError {
        GenotypeError::Darts {
            pos,
            msg: msg.into(),
        }
    }

    fn lex(text: &str) -> Result<Vec<(Tok, usize)>, GenotypeError> {
        let chars: Vec<char> = text.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if "()[],=".contains(c) {
                toks.push((Tok::Punct(c), i));
                i += 1;
            } else if c == '\'' || c == '"' {
                let start = i;
                i += 1;
                let mut s = String::new();
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' || chars[i] == '\n' {
                        return Err(err(
                            i,
                            "escapes and line breaks are not allowed in op names",
                        ));
                    }
                    s.push(chars[i]);
                    i += 1;
                }
                if i == chars.len() {
                    return Err(err(start, "unterminated string"));
                }
                i += 1;
                toks.push((Tok::Str(s), start));
            } else if c.is_ascii_digit() {
                let start = i;
                let mut s = String::new();
                while i < chars.len() && chars[i].is_ascii_digit() {
                    s.push(chars[i]);
                    i += 1;
                }
                let n = s
                    .parse::<usize>()
                    .map_err(|_| err(start, format!("number {s} is too large")))?;
                toks.push((Tok::Int(n), start));
            } else if c.is_ascii_alphabetic() || c == '_' {
                let start = i;
                let mut s = String::new();
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    s.push(chars[i]);
                    i += 1;
                }
                toks.push((Tok::Ident(s), start));
            } else {
                return Err(err(i, format!("unexpected character '{c}'")));
            }
        }
        toks.push((Tok::End, chars.len()));
        Ok(toks)
    }

    impl Lexer {
        fn peek(&self) -> &(Tok, usize) {
            &self.toks[self.at.min(self.toks.len() - 1)]
        }

        fn next(&mut self) -> (Tok, usize) {
            let t = self.peek().clone();
            if self.at < self.toks.len() - 1 {
                self.at += 1;
            }
            t
        }

        fn expect(&mut self, c: char) -> Result<usize, GenotypeError> {
            let (t, pos) = self.next();
            if t == Tok::Punct(c) {
                Ok(pos)
            } else {
                Err(err(pos, format!("expected '{c}', found {}", describe(&t))))
            }
        }

        fn eat(&mut self, c: char) -> bool {
            if self.peek().0 == Tok::Punct(c) {
                self.next();
                true
            } else {
                false
            }
        }

        fn int(&mut self) -> Result<(usize, usize), GenotypeError> {
            match self.next() {
                (Tok::Int(n), pos) => Ok((n, pos)),
                (t, pos) => Err(err(
                    pos,
                    format!("expected a number, found {}", describe(&t)),
                )),
            }
        }
    }

    /// One `(op, input)` pair with the position of its `(`.
    struct Pair {
        op: Op,
        input: usize,
        pos: usize,
    }

    /// `[('op', i), ...]` -> positioned pairs (op names are checked here, at their position).
    fn pair_list(lx: &mut Lexer, field: &str) -> Result<Vec<Pair>, GenotypeError> {
        lx.expect('[')?;
        let mut out = Vec::new();
        loop {
            if lx.eat(']') {
                return Ok(out);
            }
            let pos = lx.expect('(')?;
            let op: Op = match lx.next() {
                (Tok::Str(s), p) => s
                    .parse()
                    .map_err(|e: SpaceError| err(p, format!("{field}: {e}")))?,
                (t, p) => {
                    return Err(err(
                        p,
                        format!("expected an op name string, found {}", describe(&t)),
                    ))
                }
            };
            lx.expect(',')?;
            let (input, _) = lx.int()?;
            lx.eat(',');
            lx.expect(')')?;
            out.push(Pair { op, input, pos });
            if !lx.eat(',') {
                lx.expect(']')?;
                return Ok(out);
            }
        }
    }

    /// `[2, 3, 4, 5]` or `range(a, b)` -> positioned indices.
    fn concat_list(lx: &mut Lexer) -> Result<Vec<(usize, usize)>, GenotypeError> {
        match lx.peek().clone() {
            (Tok::Ident(id), pos) if id == "range" => {
                lx.next();
                lx.expect('(')?;
                let (a, _) = lx.int()?;
                lx.expect(',')?;
                let (b, _) = lx.int()?;
                lx.eat(',');
                lx.expect(')')?;
                if b > a + 64 {
                    return Err(err(pos, format!("range({a}, {b}) is too long")));
                }
                Ok((a..b).map(|k| (k, pos)).collect())
            }
            (Tok::Punct('['), _) => {
                lx.next();
                let mut out = Vec::new();
                loop {
                    if lx.eat(']') {
                        return Ok(out);
                    }
                    out.push(lx.int()?);
                    if !lx.eat(',') {
                        lx.expect(']')?;
                        return Ok(out);
                    }
                }
            }
            (t, pos) => Err(err(
                pos,
                format!("expected a list or range(a, b), found {}", describe(&t)),
            )),
        }
    }

    fn build_cell(
        name: &str,
        pairs: &[Pair],
        list_pos: usize,
        concat: &[(usize, usize)],
    ) -> Result<CellGenotype, GenotypeError> {
        if pairs.len() != 2 * NUM_INTERMEDIATE {
            return Err(err(
                list_pos,
                format!(
                    "{name} has {} (op, input) pairs; expected {} ({} nodes x 2)",
                    pairs.len(),
                    2 * NUM_INTERMEDIATE,
                    NUM_INTERMEDIATE
                ),
            ));
        }
        let mut cell = CellGenotype::default();
        for (p, &Pair { op, input, pos }) in pairs.iter().enumerate() {
            let node = p / 2;
            if input >= node + 2 {
                return Err(err(
                    pos,
                    format!(
                        "{name} pair {p} feeds node {} (n{node}) from {input}: inputs must be 0, 1 \
                         or an earlier node ({}..={})",
                        node + 2,
                        2,
                        node + 1
                    ),
                ));
            }
            let from = Node::from_darts_index(input).map_err(|e| err(pos, e.to_string()))?;
            match cell
                .edges
                .iter_mut()
                .find(|e| e.from == from && e.to == node)
            {
                Some(e) => {
                    if e.ops.iter().any(|o| o.op == op) {
                        return Err(err(
                            pos,
                            format!(
                                "{name}: pair ('{op}', {input}) repeats for node {}",
                                node + 2
                            ),
                        ));
                    }
                    e.ops.push(KeptOp {
                        op,
                        relevance: None,
                    });
                }
                None => cell.edges.push(KeptEdge {
                    from,
                    to: node,
                    ops: vec![KeptOp {
                        op,
                        relevance: None,
                    }],
                }),
            }
        }
        for &(k, pos) in concat {
            if !(2..NUM_INTERMEDIATE + 2).contains(&k) {
                return Err(err(
                    pos,
                    format!(
                        "{name}_concat: {k} is not an intermediate node (2..={})",
                        NUM_INTERMEDIATE + 1
                    ),
                ));
            }
            if cell.concat.contains(&(k - 2)) {
                return Err(err(pos, format!("{name}_concat: {k} listed twice")));
            }
            cell.concat.push(k - 2);
        }
        Ok(cell)
    }

    pub(super) fn parse(text: &str) -> Result<Genotype, GenotypeError> {
        let mut lx = Lexer {
            toks: lex(text)?,
            at: 0,
        };
        match lx.next() {
            (Tok::Ident(id), _) if id == "Genotype" => {}
            (t, pos) => {
                return Err(err(
                    pos,
                    format!("expected 'Genotype', found {}", describe(&t)),
                ))
            }
        }
        lx.expect('(')?;
        type Pairs = (Vec<Pair>, usize);
        let mut normal: Option<Pairs> = None;
        let mut reduce: Option<Pairs> = None;
        let mut normal_concat: Option<Vec<(usize, usize)>> = None;
        let mut reduce_concat: Option<Vec<(usize, usize)>> = None;
        loop {
            if lx.eat(')') {
                break;
            }
            let (key, key_pos) = match lx.next() {
                (Tok::Ident(id), p) => (id, p),
                (t, p) => {
                    return Err(err(
                        p,
                        format!("expected a field name, found {}", describe(&t)),
                    ))
                }
            };
            lx.expect('=')?;
            let value_pos = lx.peek().1;
            let dup = || err(key_pos, format!("field '{key}' given twice"));
            match key.as_str() {
                "normal" | "reduce" => {
                    let slot = if key == "normal" { &mut normal } else { &mut reduce };
                    if slot.is_some() {
                        return Err(dup());
                    }
                    *slot = Some((pair_list(&mut lx, &key)?, value_pos));
                }
                "normal_concat" | "reduce_concat" => {
                    let slot = if key == "normal_concat" {
                        &mut normal_concat
                    } else {
                        &mut reduce_concat
                    };
                    if slot.is_some() {
                        return Err(dup());
                    }
                    *slot = Some(concat_list(&mut lx)?);
                }
                _ => {
                    return Err(err(
                        key_pos,
                        format!("unknown field '{key}' (expected normal, normal_concat, reduce, reduce_concat)"),
                    ))
                }
            }
            if !lx.eat(',') {
                lx.expect(')')?;
                break;
            }
        }
        let (t, pos) = lx.next();
        if t != Tok::End {
            return Err(err(
                pos,
                format!("unexpected {} after the closing ')'", describe(&t)),
            ));
        }
        let end = text.chars().count();
        let missing = |f: &str| err(end, format!("missing field '{f}'"));
        let (np, npos) = normal.ok_or_else(|| missing("normal"))?;
        let (rp, rpos) = reduce.ok_or_else(|| missing("reduce"))?;
        let nc = normal_concat.ok_or_else(|| missing("normal_concat"))?;
        let rc = reduce_concat.ok_or_else(|| missing("reduce_concat"))?;
        let g = Genotype {
            space: "darts".into(),
            normal: build_cell("normal", &np, npos, &nc)?,
            reduce: build_cell("reduce", &rp, rpos, &rc)?,
        };
        g.validate().map_err(|e| err(0, e.to_string()))?;
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Genotype {
        let op = |op: Op, r: f64| KeptOp {
            op,
            relevance: Some(r),
        };
        Genotype {
            space: "bayesnas".into(),
            normal: CellGenotype {
                edges: vec![
                    KeptEdge {
                        from: Node::In0,
                        to: 0,
                        ops: vec![op(Op::SepConv3x3, 1.0), op(Op::SkipConnect, 0.5)],
                    },
                    KeptEdge {
                        from: Node::In1,
                        to: 1,
                        ops: vec![op(Op::DilConv5x5, 0.25)],
                    },
                    KeptEdge {
                        from: Node::Inter(0),
                        to: 3,
                        ops: vec![KeptOp {
                            op: Op::AvgPool3x3,
                            relevance: None,
                        }],
                    },
                ],
                concat: vec![0, 1, 3],
            },
            reduce: CellGenotype {
                edges: vec![KeptEdge {
                    from: Node::In1,
                    to: 2,
                    ops: vec![op(Op::MaxPool3x3, 0.75)],
                }],
                concat: vec![2],
            },
        }
    }

    #[test]
    fn darts_v2_round_trip() {
        let g = Genotype::from_darts_string(DARTS_V2).unwrap();
        assert_eq!(g.space, "darts");
        assert_eq!(g.to_darts_string().as_deref(), Some(DARTS_V2));
        // DARTS input 1 is our in0 (previous cell), 0 is our in1.
        let n2: Vec<_> = g.normal.incoming(2).collect();
        assert_eq!(n2[0].from, Node::In0);
        assert_eq!(n2[0].ops[0].op, Op::SepConv3x3);
        assert_eq!(n2[1].from, Node::In1);
        assert_eq!(n2[1].ops[0].op, Op::SkipConnect);
        // ('dil_conv_3x3', 2) on node 5 = n0 -> n3.
        assert!(g
            .normal
            .incoming(3)
            .any(|e| e.from == Node::Inter(0) && e.ops[0].op == Op::DilConv3x3));
        assert_eq!(g.normal.concat, [0, 1, 2, 3]);
        // Through JSON and back.
        let back = Genotype::from_json(&g.to_json().unwrap()).unwrap();
        assert_eq!(back, g);
    }

    #[test]
    fn darts_string_variants() {
        let s = DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=range(2, 6)");
        let a = Genotype::from_darts_string(&s).unwrap();
        assert_eq!(a, Genotype::from_darts_string(DARTS_V2).unwrap());
        // Field order, double quotes, whitespace, trailing commas.
        let s = "Genotype( reduce_concat=range(2,6), normal_concat=[2,3,4,5],\n\
                 normal=[(\"sep_conv_3x3\",1),(\"skip_connect\",0),('sep_conv_3x3',0),('sep_conv_3x3',1),\
                 ('sep_conv_3x3',1),('sep_conv_3x3',0),('skip_connect',0),('skip_connect',1),],\
                 reduce=[('max_pool_3x3',0),('max_pool_3x3',1),('skip_connect',2),('max_pool_3x3',1),\
                 ('max_pool_3x3',0),('skip_connect',2),('skip_connect',2),('max_pool_3x3',1)], )";
        let g = Genotype::from_darts_string(s).unwrap();
        assert_eq!(g.normal.edges.len(), 8);
        // Same op twice from one input is two ops on one edge: ('a', 0), ('b', 0).
        let s = DARTS_V2.replace(
            "('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0)",
            "('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 0)",
        );
        let g = Genotype::from_darts_string(&s).unwrap();
        let n0: Vec<_> = g.normal.incoming(0).collect();
        assert_eq!(n0.len(), 1);
        assert_eq!(n0[0].ops.len(), 2);
        assert_eq!(g.to_darts_string().unwrap(), s);
    }

    #[test]
    fn darts_string_errors_name_the_position() {
        let cases: &[(&str, &str)] = &[
            ("Genotype(normal=[('conv_7x7', 0)", "unknown operation 'conv_7x7'"),
            ("Genotype(normal=[('none', 0)", "'none' is not a candidate"),
            ("Geno(normal=[])", "expected 'Genotype'"),
            ("Genotype(normal=[('sep_conv_3x3' 0)])", "expected ','"),
            ("Genotype(normal=[], normal_concat=[2], reduce=[], reduce_concat=[2], x=1)", "unknown field 'x'"),
            ("Genotype(normal=[], normal_concat=[2], reduce=[])", "missing field 'reduce_concat'"),
            ("Genotype(normal=[], normal=[])", "given twice"),
            ("Genotype(normal=[('sep_conv_3x3', 0)], normal_concat=[2], reduce=[], reduce_concat=[2])", "expected 8"),
            ("Genotype(normal=[('sep_conv_3x3', 0)] @", "unexpected character '@'"),
            ("Genotype(normal=[('sep_conv_3x3, 0)])", "unterminated string"),
        ];
        for (text, want) in cases {
            let e = Genotype::from_darts_string(text).unwrap_err();
            assert!(matches!(e, GenotypeError::Darts { .. }), "{text}: {e:?}");
            assert!(e.to_string().contains(want), "{text}: {e}");
        }
        // Position of an unknown op: its string starts at character 18.
        match Genotype::from_darts_string("Genotype(normal=[('conv_7x7', 0)]").unwrap_err() {
            GenotypeError::Darts { pos, .. } => assert_eq!(pos, 18),
            e => panic!("{e:?}"),
        }
        // Input from a later node: node 2 (first pair) cannot read input 2.
        let bad = DARTS_V2.replacen("('sep_conv_3x3', 0)", "('sep_conv_3x3', 2)", 1);
        let e = Genotype::from_darts_string(&bad).unwrap_err().to_string();
        assert!(e.contains("earlier node"), "{e}");
        let bad = DARTS_V2.replacen(
            "normal_concat=[2, 3, 4, 5]",
            "normal_concat=[1, 3, 4, 5]",
            1,
        );
        assert!(Genotype::from_darts_string(&bad).is_err());
        let bad = format!("{DARTS_V2} extra");
        assert!(Genotype::from_darts_string(&bad).is_err());
    }

    #[test]
    fn json_round_trip_keeps_relevance_and_order() {
        let g = sample();
        let json = g.to_json().unwrap();
        assert!(json.contains("\"format\": \"bayesnas-genotype\""));
        assert!(json.contains("\"darts\": null"));
        assert!(json.contains("\"from\": \"in0\""));
        assert!(json.contains("\"concat\": [\n      \"n0\""));
        let back = Genotype::from_json(&json).unwrap();
        assert_eq!(back, g);
        // Deterministic output.
        assert_eq!(back.to_json().unwrap(), json);
        // The serde impls use the same schema.
        assert_eq!(serde_json::to_string_pretty(&g).unwrap(), json);
        let embedded: Vec<Genotype> = serde_json::from_str(&format!("[{json}]")).unwrap();
        assert_eq!(embedded[0], g);
        let mut bad = g.clone();
        bad.normal.concat.clear();
        assert!(serde_json::to_string(&bad).is_err());
    }

    fn set(json: &mut Value, path: &[&str], v: Value) {
        let mut cur = json;
        for (i, k) in path.iter().enumerate() {
            let next = match k.parse::<usize>() {
                Ok(n) => &mut cur[n],
                Err(_) => &mut cur[*k],
            };
            if i == path.len() - 1 {
                *next = v;
                return;
            }
            cur = next;
        }
    }

    fn err_of(json: &Value) -> String {
        Genotype::from_json(&json.to_string())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn json_errors_name_the_field() {
        let base: Value = serde_json::from_str(&sample().to_json().unwrap()).unwrap();
        let check = |path: &[&str], v: Value, want_path: &str, want: &str| {
            let mut j = base.clone();
            set(&mut j, path, v);
            let e = err_of(&j);
            assert!(e.starts_with(want_path), "{e}");
            assert!(e.contains(want), "{e}");
        };
        use serde_json::json;
        check(
            &["normal", "edges", "0", "ops", "1", "op"],
            json!("conv_7x7"),
            "normal.edges[0].ops[1].op",
            "unknown operation 'conv_7x7'",
        );
        check(
            &["normal", "edges", "1", "to"],
            json!("n7"),
            "normal.edges[1].to",
            "unknown node 'n7'",
        );
        check(
            &["normal", "edges", "1", "to"],
            json!("in1"),
            "normal.edges[1].to",
            "input node",
        );
        check(
            &["normal", "edges", "1", "from"],
            json!("n3"),
            "normal.edges[1].from",
            "earlier",
        );
        check(
            &["reduce", "concat", "0"],
            json!("n1"),
            "reduce.concat[0]",
            "no incoming edge",
        );
        check(
            &["normal", "edges", "0", "ops"],
            json!([]),
            "normal.edges[0].ops",
            "at least one op",
        );
        check(&["version"], json!(2), "version", "unsupported version 2");
        check(
            &["format"],
            json!("other"),
            "format",
            "expected \"bayesnas-genotype\"",
        );
        check(&["space"], json!(3), "space", "expected a string");
        check(
            &["normal", "edges", "0", "ops", "0", "relevance"],
            json!("high"),
            "normal.edges[0].ops[0].relevance",
            "expected a number",
        );
        check(
            &["darts"],
            json!("Genotype(x"),
            "darts",
            "DARTS genotype string",
        );
        // Missing fields.
        let mut j = base.clone();
        j["normal"]["edges"][2]
            .as_object_mut()
            .unwrap()
            .remove("from");
        let e = err_of(&j);
        assert!(e.starts_with("normal.edges[2].from: missing field"), "{e}");
        let mut j = base.clone();
        j.as_object_mut().unwrap().remove("reduce");
        assert!(err_of(&j).starts_with("reduce: missing field"));
        // Unknown key.
        let mut j = base.clone();
        j["normal"]["concta"] = json!([]);
        assert!(err_of(&j).contains("normal.concta: unknown field"));
        // An edge not in the declared space (bayesnas normal has no in0->n3).
        let mut j = base.clone();
        j["normal"]["edges"][2]["from"] = json!("in0");
        assert!(err_of(&j).contains("not in the normal cells of space 'bayesnas'"));
        // Dangling node and duplicate edge.
        let mut j = base.clone();
        j["normal"]["concat"] = json!(["n0", "n3"]);
        assert!(err_of(&j).contains("neither in concat nor used"));
        let mut j = base.clone();
        let dup = j["normal"]["edges"][1].clone();
        j["normal"]["edges"].as_array_mut().unwrap().push(dup);
        assert!(err_of(&j).contains("appears twice"));
        // Not JSON.
        assert!(matches!(
            Genotype::from_json("{"),
            Err(GenotypeError::Json(_))
        ));
        // darts string that disagrees with the cells.
        let g = Genotype::from_darts_string(DARTS_V2).unwrap();
        let mut j: Value = serde_json::from_str(&g.to_json().unwrap()).unwrap();
        j["darts"] = json!(DARTS_V2.replace("dil_conv_3x3", "dil_conv_5x5"));
        assert!(err_of(&j).contains("differs"));
    }

    #[test]
    fn to_darts_string_only_when_it_fits() {
        assert!(sample().to_darts_string().is_none());
        let g = Genotype::from_darts_string(DARTS_V2).unwrap();
        let mut h = g.clone();
        h.normal.edges[0].ops.push(KeptOp {
            op: Op::AvgPool3x3,
            relevance: None,
        });
        assert!(h.to_darts_string().is_none());
    }
}
