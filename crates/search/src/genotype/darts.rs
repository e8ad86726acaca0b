//! DARTS `Genotype(...)` strings: the printer and a small recursive-descent parser (lexer,
//! pair and concat lists, cell assembly) with errors that give the character position.

use std::fmt::Write as _;

use super::{CellGenotype, Genotype, GenotypeError, KeptEdge, KeptOp};
use crate::space::{Node, Op, SpaceError, NUM_INTERMEDIATE};

impl CellGenotype {
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
}

impl Genotype {
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
        parse(text)
    }
}

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

/// Fills a field that may be given once: the `dup` error when it already is, else `value()`
/// (read only then).
fn set_once<T>(
    slot: &mut Option<T>,
    dup: impl FnOnce() -> GenotypeError,
    value: impl FnOnce() -> Result<T, GenotypeError>,
) -> Result<(), GenotypeError> {
    if slot.is_some() {
        return Err(dup());
    }
    *slot = Some(value()?);
    Ok(())
}

fn parse(text: &str) -> Result<Genotype, GenotypeError> {
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
        let pairs = |lx: &mut Lexer| -> Result<Pairs, GenotypeError> {
            Ok((pair_list(lx, &key)?, value_pos))
        };
        match key.as_str() {
            "normal" => set_once(&mut normal, dup, || pairs(&mut lx))?,
            "reduce" => set_once(&mut reduce, dup, || pairs(&mut lx))?,
            "normal_concat" => set_once(&mut normal_concat, dup, || concat_list(&mut lx))?,
            "reduce_concat" => set_once(&mut reduce_concat, dup, || concat_list(&mut lx))?,
            _ => {
                let expected = "expected normal, normal_concat, reduce, reduce_concat";
                return Err(err(key_pos, format!("unknown field '{key}' ({expected})")));
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
