//! Drawings of a derived cell: Graphviz DOT text and a self-contained SVG drawn by this crate
//! (no external tools).
//!
//! # SVG layout
//!
//! A small layered layout. The inputs `in0` (previous cell, `c_{k-1}`) and `in1` (`c_{k-2}`)
//! are in the left column, each intermediate node in the column of its depth (1 + the deepest
//! of its sources), the output node (the concat, `c_{k}`) in the right column. Between two node
//! columns lies a label column. Every kept edge puts its label (its op names stacked one per
//! line, with the relevance when known, on a white box framed in the edge's colour) into one
//! label column it crosses: the least loaded one, then the one nearest the middle of the edge.
//! In every other column it crosses, the edge has a thin slot of its own, so that it passes
//! beside nodes and labels, never through them. The slots of each column (nodes, labels,
//! passing edges) are then placed by a few rounds of pulling every slot towards its neighbours
//! along its edges and packing each column without overlaps (least squares under minimum
//! spacing, by pool-adjacent-violators); nodes keep their order within a column. Edges are
//! horizontal lines through their slots joined by cubic curves in the spaces between columns,
//! which widen with the steepest curve; edges at a node are spread over its height. Concat
//! links are dashed. Text is at least 12 px and the picture is sized to fit its content. So no
//! two labels overlap and no label overlaps a node, by construction (and tested on cells with
//! every edge of the `bayesnas` and `darts` spaces keeping all seven ops).
//!
//! Why our own layout: Graphviz `dot` lays out edge labels well but is a separate program
//! users do not have, so it cannot be required (the DOT text is still written for those who
//! do). The pure-Rust `layout-rs` crate renders DOT to SVG, but on a dense cell (the `darts`
//! space, 14 edges with 7 ops each) its labels floated away from their edges, sat on edges
//! and lost the edge colours, and half the picture was empty. Its placement cannot be
//! constrained or inspected, whereas ours exposes every rectangle to the tests, which assert
//! the no-overlap property, and it is deterministic and needs no new dependency.

use std::fmt::Write as _;

use crate::genotype::{CellGenotype, KeptEdge};
use crate::space::Node;
pub use crate::svg::xml_escape;
use crate::svg::{background_and_title, escape_chars, svg_open, MARGIN, MONO_CHAR_W, TITLE_CHAR_W};

mod layout;

use layout::{layout, path_data};

const NODE_W: f64 = 76.0;
const NODE_H: f64 = 40.0;
/// Least vertical clearance around a node box within its column.
const NODE_MARGIN: f64 = 22.0;
const TITLE_H: f64 = 36.0;
const LABEL_FONT: f64 = 12.0;
/// Monospace advance of the label text.
const LABEL_CHAR_W: f64 = MONO_CHAR_W;
const LABEL_LINE_H: f64 = 15.0;
const LABEL_PAD: f64 = 4.0;
/// Least vertical clearance around a label box within its column.
const LABEL_MARGIN: f64 = 10.0;
/// Height and clearance of the slot of an edge passing through a column.
const PASS_H: f64 = 2.0;
const PASS_MARGIN: f64 = 6.0;
/// Width of the space between columns: `CURVE_SLOPE` times the largest rise of a curve in it,
/// within `[CURVE_MIN_W, CURVE_MAX_W]`.
const CURVE_MIN_W: f64 = 44.0;
const CURVE_MAX_W: f64 = 150.0;
const CURVE_SLOPE: f64 = 0.3;
/// Largest spacing of edge ends along a node side.
const PORT_STEP: f64 = 7.0;
/// Relaxation rounds of the vertical placement.
const LAYOUT_ROUNDS: usize = 40;
const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

fn node_id(n: Node) -> String {
    n.to_string()
}

fn node_caption(n: Node) -> Option<&'static str> {
    match n {
        Node::In0 => Some("c_{k-1}"),
        Node::In1 => Some("c_{k-2}"),
        Node::Inter(_) => None,
    }
}

fn op_lines(e: &KeptEdge) -> Vec<String> {
    e.ops
        .iter()
        .map(|o| match o.relevance {
            Some(r) => format!("{} {:.2}", o.op, r),
            None => o.op.to_string(),
        })
        .collect()
}

fn dot_escape(s: &str) -> String {
    escape_chars(s, |c| match c {
        '"' => Some("\\\""),
        '\\' => Some("\\\\"),
        '\n' => Some("\\n"),
        _ => None,
    })
}

/// Nodes drawn: both inputs plus every intermediate node that an edge or concat names.
fn drawn_nodes(cell: &CellGenotype) -> Vec<Node> {
    let mut nodes = vec![Node::In0, Node::In1];
    let mut inter: Vec<usize> = cell
        .edges
        .iter()
        .flat_map(|e| [Some(e.to), e.from.intermediate()])
        .flatten()
        .chain(cell.concat.iter().copied())
        .collect();
    inter.sort_unstable();
    inter.dedup();
    nodes.extend(inter.into_iter().map(Node::Inter));
    nodes
}

/// Graphviz DOT for one cell (left to right). Every kept edge is one DOT edge labelled with its
/// op names, one per line; concat links to the `out` node are dashed.
pub fn to_dot(cell: &CellGenotype, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph \"{}\" {{", dot_escape(title));
    let _ = writeln!(s, "  rankdir=LR;");
    let _ = writeln!(s, "  labelloc=t;");
    let _ = writeln!(s, "  label=\"{}\";", dot_escape(title));
    let _ = writeln!(
        s,
        "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=14];"
    );
    let _ = writeln!(s, "  edge [fontname=\"Courier\", fontsize=12];");
    for n in drawn_nodes(cell) {
        let (label, fill) = match node_caption(n) {
            Some(c) => (format!("{n}\\n{c}"), "#dbe9f6"),
            None => (n.to_string(), "#fff2cc"),
        };
        let _ = writeln!(
            s,
            "  \"{}\" [label=\"{label}\", fillcolor=\"{fill}\"];",
            node_id(n)
        );
    }
    let _ = writeln!(
        s,
        "  \"out\" [label=\"out\\nc_{{k}}\", fillcolor=\"#d9ead3\"];"
    );
    for (i, e) in cell.edges.iter().enumerate() {
        let label = op_lines(e).join("\\n");
        let _ = writeln!(
            s,
            "  \"{}\" -> \"{}\" [label=\"{label}\", color=\"{c}\", fontcolor=\"{c}\"];",
            node_id(e.from),
            node_id(Node::Inter(e.to)),
            c = PALETTE[i % PALETTE.len()]
        );
    }
    for &j in &cell.concat {
        let _ = writeln!(
            s,
            "  \"{}\" -> \"out\" [style=dashed, color=\"#777777\"];",
            node_id(Node::Inter(j))
        );
    }
    s.push_str("}\n");
    s
}

/// A self-contained SVG drawing of one cell (see the module documentation).
pub fn to_svg(cell: &CellGenotype, title: &str) -> String {
    let lay = layout(cell, title);
    let (w, h) = (lay.width, lay.height);
    let mut s = svg_open(w, h, title);
    s.push_str("  <defs>\n");
    for (i, c) in PALETTE.iter().enumerate() {
        let _ = writeln!(
            s,
            "    <marker id=\"arrow{i}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"8\" \
             markerHeight=\"8\" orient=\"auto\" markerUnits=\"userSpaceOnUse\"><path d=\"M 0 0 L 10 5 \
             L 0 10 z\" fill=\"{c}\"/></marker>"
        );
    }
    s.push_str(
        "    <marker id=\"arrowc\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"8\" \
         markerHeight=\"8\" orient=\"auto\" markerUnits=\"userSpaceOnUse\"><path d=\"M 0 0 L 10 5 \
         L 0 10 z\" fill=\"#777777\"/></marker>\n",
    );
    s.push_str("  </defs>\n");
    background_and_title(&mut s, w, h, MARGIN, title);
    // Concat links first (under everything), then kept edges, nodes and labels.
    for r in lay.routes.iter().filter(|r| r.edge.is_none()) {
        let _ = writeln!(
            s,
            "  <path d=\"{}\" fill=\"none\" stroke=\"#777777\" stroke-width=\"1.4\" \
             stroke-dasharray=\"6 4\" marker-end=\"url(#arrowc)\"/>",
            path_data(&r.segs)
        );
    }
    for r in &lay.routes {
        let Some(i) = r.edge else { continue };
        let _ = writeln!(
            s,
            "  <path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\" \
             marker-end=\"url(#arrow{})\"/>",
            path_data(&r.segs),
            PALETTE[i % PALETTE.len()],
            i % PALETTE.len()
        );
    }
    for n in &lay.nodes {
        let (x, y) = ((n.rect.x0 + n.rect.x1) / 2.0, (n.rect.y0 + n.rect.y1) / 2.0);
        let _ = writeln!(
            s,
            "  <g class=\"node\"><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{NODE_W}\" height=\"{NODE_H}\" \
             rx=\"8\" fill=\"{}\" stroke=\"#333333\" stroke-width=\"1.2\"/>",
            n.rect.x0, n.rect.y0, n.fill
        );
        match n.caption {
            Some(c) => {
                let _ = writeln!(
                    s,
                    "    <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-family=\"sans-serif\" \
                     font-size=\"14\" font-weight=\"bold\">{}</text>\n    <text x=\"{x:.1}\" y=\"{:.1}\" \
                     text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"12\" \
                     fill=\"#444444\">{}</text>",
                    y - 3.0,
                    xml_escape(&n.id),
                    y + 13.0,
                    xml_escape(c)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "    <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-family=\"sans-serif\" \
                     font-size=\"14\" font-weight=\"bold\">{}</text>",
                    y + 5.0,
                    xml_escape(&n.id)
                );
            }
        }
        s.push_str("  </g>\n");
    }
    for l in &lay.labels {
        let e = &cell.edges[l.edge];
        let color = PALETTE[l.edge % PALETTE.len()];
        let r = l.rect;
        let _ = writeln!(
            s,
            "  <g class=\"label\"><title>{} -&gt; n{}</title>\n    <rect x=\"{:.1}\" y=\"{:.1}\" \
             width=\"{:.1}\" height=\"{:.1}\" rx=\"3\" fill=\"#ffffff\" stroke=\"{color}\" \
             stroke-width=\"1.2\"/>",
            e.from,
            e.to,
            r.x0,
            r.y0,
            r.x1 - r.x0,
            r.y1 - r.y0
        );
        for (k, line) in l.lines.iter().enumerate() {
            let _ = writeln!(
                s,
                "    <text x=\"{:.1}\" y=\"{:.1}\" font-family=\"monospace\" font-size=\"{LABEL_FONT}\" \
                 fill=\"{color}\">{}</text>",
                r.x0 + LABEL_PAD,
                r.y0 + LABEL_PAD + (k as f64 + 1.0) * LABEL_LINE_H - 3.5,
                xml_escape(line)
            );
        }
        s.push_str("  </g>\n");
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests;
