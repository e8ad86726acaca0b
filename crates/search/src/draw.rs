//! Drawings of a derived cell: Graphviz DOT text and a self-contained SVG drawn by this crate
//! (no external tools).
//!
//! SVG layout: the inputs `in0` (previous cell, `c_{k-1}`) and `in1` (`c_{k-2}`) in the left
//! column, each intermediate node in the column of its depth (1 + the deepest of its sources),
//! the output node (the concat, `c_{k}`) in the right column. Edges are cubic curves with
//! arrowheads, each labelled with its op names stacked one per line (with the relevance when
//! known) on a white box with the edge's colour; labels are moved along their curve to avoid
//! overlapping each other and the nodes. Concat links are dashed. Text is at least 12 px and
//! the picture is sized to fit its content.

use std::fmt::Write as _;

use crate::genotype::{CellGenotype, KeptEdge};
use crate::space::Node;

const NODE_W: f64 = 76.0;
const NODE_H: f64 = 40.0;
const MIN_ROW_H: f64 = 96.0;
const MARGIN: f64 = 20.0;
const TITLE_H: f64 = 36.0;
const LABEL_FONT: f64 = 12.0;
const LABEL_CHAR_W: f64 = 7.3; // monospace advance at 12 px, slightly generous
const LABEL_LINE_H: f64 = 15.0;
const LABEL_PAD: f64 = 4.0;
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
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for XML content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Nodes drawn: both inputs plus every intermediate node with an incoming edge or in concat.
fn drawn_nodes(cell: &CellGenotype) -> Vec<Node> {
    let mut nodes = vec![Node::In0, Node::In1];
    let mut inter: Vec<usize> = cell
        .edges
        .iter()
        .map(|e| e.to)
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

#[derive(Clone, Copy, Debug)]
struct Rect {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

impl Rect {
    fn centered(cx: f64, cy: f64, w: f64, h: f64) -> Rect {
        Rect {
            x0: cx - w / 2.0,
            y0: cy - h / 2.0,
            x1: cx + w / 2.0,
            y1: cy + h / 2.0,
        }
    }

    fn overlap(&self, o: &Rect) -> f64 {
        let w = (self.x1.min(o.x1) - self.x0.max(o.x0)).max(0.0);
        let h = (self.y1.min(o.y1) - self.y0.max(o.y0)).max(0.0);
        w * h
    }
}

struct Bounds {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

impl Bounds {
    fn add(&mut self, r: &Rect) {
        self.x0 = self.x0.min(r.x0);
        self.y0 = self.y0.min(r.y0);
        self.x1 = self.x1.max(r.x1);
        self.y1 = self.y1.max(r.y1);
    }
}

fn bezier(p: [(f64, f64); 4], t: f64) -> (f64, f64) {
    let u = 1.0 - t;
    let (a, b, c, d) = (u * u * u, 3.0 * u * u * t, 3.0 * u * t * t, t * t * t);
    (
        a * p[0].0 + b * p[1].0 + c * p[2].0 + d * p[3].0,
        a * p[0].1 + b * p[1].1 + c * p[2].1 + d * p[3].1,
    )
}

/// A piece of a routed edge.
#[derive(Clone, Copy, Debug)]
enum Seg {
    /// Cubic Bezier with horizontal end tangents.
    Cubic([(f64, f64); 4]),
    /// Straight horizontal pass beside a column's nodes.
    Line((f64, f64), (f64, f64)),
}

fn cubic(a: (f64, f64), b: (f64, f64)) -> Seg {
    let dx = ((b.0 - a.0) * 0.5).max(10.0);
    Seg::Cubic([a, (a.0 + dx, a.1), (b.0 - dx, b.1), b])
}

/// Routes an edge from the node at `from` (column `d0`) to the node at `to` (column `d1`).
/// Through every column in between, the edge passes at the height of the straight line unless
/// that would cross a node of the column; then it uses the nearest gap between rows.
fn route(
    from: (f64, f64),
    to: (f64, f64),
    d0: usize,
    d1: usize,
    columns: &[Vec<(f64, f64)>],
    row_h: f64,
) -> Vec<Seg> {
    let start = (from.0 + NODE_W / 2.0, from.1);
    let end = (to.0 - NODE_W / 2.0 - 2.0, to.1);
    let mut points = vec![start];
    for col in columns.iter().take(d1).skip(d0 + 1) {
        let Some(&(x, _)) = col.first() else { continue };
        let line_y = start.1 + (end.1 - start.1) * (x - start.0) / (end.0 - start.0);
        let clear = |y: f64| {
            col.iter()
                .all(|&(_, ny)| (y - ny).abs() >= NODE_H / 2.0 + 10.0)
        };
        let y = if clear(line_y) {
            line_y
        } else {
            let mut gaps: Vec<f64> = col
                .iter()
                .flat_map(|&(_, ny)| [ny - row_h / 2.0, ny + row_h / 2.0])
                .filter(|&y| clear(y))
                .collect();
            gaps.sort_by(|a, b| (a - line_y).abs().total_cmp(&(b - line_y).abs()));
            gaps.first().copied().unwrap_or(line_y)
        };
        points.push((x - NODE_W / 2.0 - 6.0, y));
        points.push((x + NODE_W / 2.0 + 6.0, y));
    }
    points.push(end);
    let mut segs = Vec::new();
    for (k, w) in points.windows(2).enumerate() {
        // Odd windows are the passes beside a column.
        if k % 2 == 1 {
            segs.push(Seg::Line(w[0], w[1]));
        } else {
            segs.push(cubic(w[0], w[1]));
        }
    }
    segs
}

fn path_data(segs: &[Seg]) -> String {
    let mut d = String::new();
    for (k, seg) in segs.iter().enumerate() {
        let first = match seg {
            Seg::Cubic(p) => p[0],
            Seg::Line(a, _) => *a,
        };
        if k == 0 {
            let _ = write!(d, "M {:.1} {:.1}", first.0, first.1);
        }
        match seg {
            Seg::Cubic(p) => {
                let _ = write!(
                    d,
                    " C {:.1} {:.1}, {:.1} {:.1}, {:.1} {:.1}",
                    p[1].0, p[1].1, p[2].0, p[2].1, p[3].0, p[3].1
                );
            }
            Seg::Line(_, b) => {
                let _ = write!(d, " L {:.1} {:.1}", b.0, b.1);
            }
        }
    }
    d
}

/// Candidate label centres along the route, with a preference cost (0 at the middle of
/// the route).
fn label_spots(segs: &[Seg]) -> Vec<((f64, f64), f64)> {
    let n = segs.len() as f64;
    let mut out = Vec::new();
    for (k, seg) in segs.iter().enumerate() {
        for step in 2..=18 {
            let t = step as f64 / 20.0;
            let global = (k as f64 + t) / n;
            let at = match seg {
                Seg::Cubic(p) => bezier(*p, t),
                Seg::Line(a, b) => (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t),
            };
            out.push((at, (global - 0.5).abs()));
        }
    }
    out
}

/// A self-contained SVG drawing of one cell (see the module documentation).
pub fn to_svg(cell: &CellGenotype, title: &str) -> String {
    let nodes = drawn_nodes(cell);
    // Depth: inputs 0, node j = 1 + max depth of its sources (sources are earlier nodes).
    let mut depth = std::collections::BTreeMap::new();
    depth.insert(Node::In0, 0usize);
    depth.insert(Node::In1, 0usize);
    for n in &nodes {
        if let Node::Inter(j) = *n {
            let d = cell
                .incoming(j)
                .map(|e| depth.get(&e.from).copied().unwrap_or(0))
                .max()
                .unwrap_or(0)
                + 1;
            depth.insert(*n, d);
        }
    }
    let out_depth = depth.values().copied().max().unwrap_or(0) + 1;
    let widest_label = cell
        .edges
        .iter()
        .flat_map(op_lines)
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0) as f64
        * LABEL_CHAR_W
        + 2.0 * LABEL_PAD;
    // Room for two labels side by side along crowded curves.
    let col_w = NODE_W + (1.6 * widest_label + 60.0).max(130.0);
    let mut columns: Vec<Vec<Node>> = vec![Vec::new(); out_depth];
    for n in &nodes {
        columns[depth[n]].push(*n);
    }
    let max_rows = columns.iter().map(Vec::len).max().unwrap_or(1).max(1) as f64;
    // Rows far enough apart for the tallest (stacked) label between them.
    let tallest = cell.edges.iter().map(|e| e.ops.len()).max().unwrap_or(1) as f64;
    let row_h = MIN_ROW_H.max(tallest * LABEL_LINE_H + 2.0 * LABEL_PAD + 56.0);
    let body_h = max_rows * row_h;
    let top = MARGIN + TITLE_H;
    let mut pos = std::collections::BTreeMap::new();
    let mut col_pos: Vec<Vec<(f64, f64)>> = vec![Vec::new(); out_depth + 1];
    for (d, col) in columns.iter().enumerate() {
        let x = MARGIN + NODE_W / 2.0 + d as f64 * col_w;
        let offset = (body_h - col.len() as f64 * row_h) / 2.0;
        for (r, n) in col.iter().enumerate() {
            let p = (x, top + offset + (r as f64 + 0.5) * row_h);
            pos.insert(*n, p);
            col_pos[d].push(p);
        }
    }
    let out_pos = (
        MARGIN + NODE_W / 2.0 + out_depth as f64 * col_w,
        top + body_h / 2.0,
    );
    col_pos[out_depth].push(out_pos);

    let mut bounds = Bounds {
        x0: 0.0,
        y0: 0.0,
        x1: out_pos.0 + NODE_W / 2.0 + MARGIN,
        y1: top + body_h + MARGIN,
    };
    let title_w = title.chars().count() as f64 * 9.5 + 2.0 * MARGIN;
    bounds.x1 = bounds.x1.max(title_w);
    let node_rects: Vec<Rect> = pos
        .values()
        .chain(std::iter::once(&out_pos))
        .map(|&(x, y)| Rect::centered(x, y, NODE_W + 8.0, NODE_H + 8.0))
        .collect();

    let mut edges_svg = String::new();
    let mut labels_svg = String::new();
    let mut placed: Vec<Rect> = Vec::new();
    // Tallest labels first, so that they get the free spots; colours follow the edge order.
    let mut order: Vec<usize> = (0..cell.edges.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(cell.edges[i].ops.len()));
    for i in order {
        let e = &cell.edges[i];
        let (Some(&from), Some(&to)) = (pos.get(&e.from), pos.get(&Node::Inter(e.to))) else {
            continue;
        };
        let color = PALETTE[i % PALETTE.len()];
        let segs = route(
            from,
            to,
            depth[&e.from],
            depth[&Node::Inter(e.to)],
            &col_pos,
            row_h,
        );
        let _ = writeln!(
            edges_svg,
            "  <path d=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.8\" \
             marker-end=\"url(#arrow{})\"/>",
            path_data(&segs),
            i % PALETTE.len()
        );
        let lines = op_lines(e);
        let w = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as f64 * LABEL_CHAR_W
            + 2.0 * LABEL_PAD;
        let h = lines.len() as f64 * LABEL_LINE_H + 2.0 * LABEL_PAD;
        // Slide the label along its route to the free spot nearest the middle (or the spot of
        // least overlap with other labels and nodes).
        let mut best: Option<(f64, Rect)> = None;
        for ((cx, cy), pref) in label_spots(&segs) {
            let r = Rect::centered(cx, cy, w, h);
            let overlap: f64 = placed.iter().chain(&node_rects).map(|o| r.overlap(o)).sum();
            let cost = overlap * 1000.0 + pref;
            if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                best = Some((cost, r));
            }
        }
        let Some((_, r)) = best else { continue };
        placed.push(r);
        bounds.add(&Rect {
            x0: r.x0 - MARGIN,
            y0: r.y0 - MARGIN,
            x1: r.x1 + MARGIN,
            y1: r.y1 + MARGIN,
        });
        let _ = writeln!(
            labels_svg,
            "  <g class=\"label\"><title>{} -&gt; n{}</title>\n    <rect x=\"{:.1}\" y=\"{:.1}\" \
             width=\"{:.1}\" height=\"{:.1}\" rx=\"3\" fill=\"#ffffff\" fill-opacity=\"0.92\" \
             stroke=\"{color}\" stroke-width=\"1\"/>",
            e.from, e.to, r.x0, r.y0, w, h
        );
        for (k, line) in lines.iter().enumerate() {
            let _ = writeln!(
                labels_svg,
                "    <text x=\"{:.1}\" y=\"{:.1}\" font-family=\"monospace\" font-size=\"{LABEL_FONT}\" \
                 fill=\"{color}\">{}</text>",
                r.x0 + LABEL_PAD,
                r.y0 + LABEL_PAD + (k as f64 + 1.0) * LABEL_LINE_H - 3.5,
                xml_escape(line)
            );
        }
        labels_svg.push_str("  </g>\n");
    }
    for &j in &cell.concat {
        let Some(&from) = pos.get(&Node::Inter(j)) else {
            continue;
        };
        let segs = route(
            from,
            out_pos,
            depth[&Node::Inter(j)],
            out_depth,
            &col_pos,
            row_h,
        );
        let _ = writeln!(
            edges_svg,
            "  <path d=\"{}\" fill=\"none\" stroke=\"#777777\" stroke-width=\"1.4\" \
             stroke-dasharray=\"6 4\" marker-end=\"url(#arrowc)\"/>",
            path_data(&segs)
        );
    }

    let mut nodes_svg = String::new();
    let mut draw_node = |id: &str, caption: Option<&str>, (x, y): (f64, f64), fill: &str| {
        let _ = writeln!(
            nodes_svg,
            "  <g class=\"node\"><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{NODE_W}\" height=\"{NODE_H}\" \
             rx=\"8\" fill=\"{fill}\" stroke=\"#333333\" stroke-width=\"1.2\"/>",
            x - NODE_W / 2.0,
            y - NODE_H / 2.0
        );
        match caption {
            Some(c) => {
                let _ = writeln!(
                    nodes_svg,
                    "    <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-family=\"sans-serif\" \
                     font-size=\"14\" font-weight=\"bold\">{}</text>\n    <text x=\"{x:.1}\" y=\"{:.1}\" \
                     text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"12\" \
                     fill=\"#444444\">{}</text>",
                    y - 3.0,
                    xml_escape(id),
                    y + 13.0,
                    xml_escape(c)
                );
            }
            None => {
                let _ = writeln!(
                    nodes_svg,
                    "    <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-family=\"sans-serif\" \
                     font-size=\"14\" font-weight=\"bold\">{}</text>",
                    y + 5.0,
                    xml_escape(id)
                );
            }
        }
        nodes_svg.push_str("  </g>\n");
    };
    for n in &nodes {
        let fill = if n.is_input() { "#dbe9f6" } else { "#fff2cc" };
        draw_node(&node_id(*n), node_caption(*n), pos[n], fill);
    }
    draw_node("out", Some("c_{k}"), out_pos, "#d9ead3");

    let (w, h) = (bounds.x1 - bounds.x0, bounds.y1 - bounds.y0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" \
         viewBox=\"{:.1} {:.1} {w:.1} {h:.1}\">",
        bounds.x0, bounds.y0
    );
    let _ = writeln!(s, "  <title>{}</title>", xml_escape(title));
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
    let _ = writeln!(
        s,
        "  <rect x=\"{:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"#ffffff\"/>",
        bounds.x0, bounds.y0
    );
    let _ = writeln!(
        s,
        "  <text x=\"{MARGIN}\" y=\"{:.1}\" font-family=\"sans-serif\" font-size=\"16\" \
         font-weight=\"bold\">{}</text>",
        MARGIN + 16.0,
        xml_escape(title)
    );
    s.push_str(&edges_svg);
    s.push_str(&nodes_svg);
    s.push_str(&labels_svg);
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genotype::{Genotype, DARTS_V2};

    /// A tiny XML well-formedness checker: balanced, properly nested tags, quoted attributes
    /// without duplicates, known entities, nothing outside the root element. Returns the text
    /// content and element names seen.
    fn check_xml(s: &str) -> Result<(Vec<String>, Vec<String>), String> {
        let b = s.as_bytes();
        let mut i = 0;
        let mut stack: Vec<String> = Vec::new();
        let mut texts = Vec::new();
        let mut names = Vec::new();
        let mut roots = 0;
        let check_text = |t: &str| -> Result<String, String> {
            if t.contains('<') {
                return Err(format!("stray '<' in {t:?}"));
            }
            let mut out = String::new();
            let mut rest = t;
            while let Some(p) = rest.find('&') {
                out.push_str(&rest[..p]);
                let end = rest[p..].find(';').ok_or(format!("bad entity in {t:?}"))?;
                let ent = &rest[p + 1..p + end];
                out.push(match ent {
                    "amp" => '&',
                    "lt" => '<',
                    "gt" => '>',
                    "quot" => '"',
                    "apos" => '\'',
                    _ => return Err(format!("unknown entity &{ent};")),
                });
                rest = &rest[p + end + 1..];
            }
            out.push_str(rest);
            Ok(out)
        };
        while i < b.len() {
            if b[i] == b'<' {
                let end = s[i..].find('>').ok_or("unclosed tag")? + i;
                let tag = &s[i + 1..end];
                if let Some(name) = tag.strip_prefix('/') {
                    let open = stack.pop().ok_or(format!("unmatched </{name}>"))?;
                    if open != name.trim() {
                        return Err(format!("<{open}> closed by </{name}>"));
                    }
                } else {
                    if stack.is_empty() {
                        roots += 1;
                    }
                    let self_closing = tag.ends_with('/');
                    let body = tag.trim_end_matches('/');
                    let name: String = body.chars().take_while(|c| !c.is_whitespace()).collect();
                    if name.is_empty()
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':')
                    {
                        return Err(format!("bad tag name in <{tag}>"));
                    }
                    // Attributes: name="value" pairs.
                    let mut rest = body[name.len()..].trim_start();
                    let mut seen = Vec::new();
                    while !rest.is_empty() {
                        let eq = rest
                            .find('=')
                            .ok_or(format!("attribute without value in <{tag}>"))?;
                        let an = rest[..eq].trim();
                        if an.is_empty() || seen.contains(&an) {
                            return Err(format!("bad or duplicate attribute {an:?} in <{tag}>"));
                        }
                        seen.push(an);
                        let after = &rest[eq + 1..];
                        if !after.starts_with('"') {
                            return Err(format!("unquoted attribute {an} in <{tag}>"));
                        }
                        let close = after[1..].find('"').ok_or("unterminated attribute")? + 1;
                        check_text(&after[1..close])?;
                        rest = after[close + 1..].trim_start();
                    }
                    names.push(name.clone());
                    if !self_closing {
                        stack.push(name);
                    }
                }
                i = end + 1;
            } else {
                let end = s[i..].find('<').map_or(b.len(), |p| p + i);
                let text = &s[i..end];
                if stack.is_empty() && !text.trim().is_empty() {
                    return Err(format!("text outside the root: {text:?}"));
                }
                if text.contains('>') {
                    return Err(format!("stray '>' in {text:?}"));
                }
                texts.push(check_text(text)?);
                i = end;
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed elements {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok((texts, names))
    }

    #[test]
    fn xml_checker_catches_errors() {
        assert!(check_xml("<a><b/></a>").is_ok());
        assert!(check_xml("<a><b></a>").is_err());
        assert!(check_xml("<a x=1/>").is_err());
        assert!(check_xml("<a>&nbsp;</a>").is_err());
        assert!(check_xml("<a/><b/>").is_err());
        assert!(check_xml("<a x=\"1\" x=\"2\"/>").is_err());
    }

    #[test]
    fn svg_is_well_formed_and_labelled() {
        let g = Genotype::from_darts_string(DARTS_V2).unwrap();
        for (cell, title) in [
            (&g.normal, "DARTS_V2 normal <cell> & co"),
            (&g.reduce, "reduce"),
        ] {
            let svg = to_svg(cell, title);
            let (texts, names) = check_xml(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
            assert_eq!(names[0], "svg");
            let all = texts.join("\n");
            for e in &cell.edges {
                for o in &e.ops {
                    assert!(all.contains(o.op.name()), "{}", o.op);
                }
            }
            for n in ["in0", "in1", "n0", "n1", "n2", "n3", "out"] {
                assert!(texts.iter().any(|t| t == n), "{n}");
            }
            assert!(all.contains(title));
            // Font sizes all >= 12.
            for part in svg.split("font-size=\"").skip(1) {
                let size: f64 = part[..part.find('"').unwrap()].parse().unwrap();
                assert!(size >= 12.0);
            }
        }
    }

    #[test]
    fn svg_stacks_several_ops_and_handles_sparse_cells() {
        let mut g = Genotype::from_darts_string(DARTS_V2).unwrap();
        g.normal.edges.truncate(1);
        g.normal.concat = vec![0];
        g.normal.edges[0].ops.push(crate::genotype::KeptOp {
            op: crate::space::Op::DilConv5x5,
            relevance: Some(0.5),
        });
        let svg = to_svg(&g.normal, "one edge");
        let (texts, _) = check_xml(&svg).unwrap();
        assert!(texts.iter().any(|t| t == "sep_conv_3x3"));
        assert!(texts.iter().any(|t| t == "dil_conv_5x5 0.50"));
        assert!(!texts.iter().any(|t| t == "n2"));
        // Empty cell (not valid, but drawing must not panic).
        let svg = to_svg(&CellGenotype::default(), "empty");
        check_xml(&svg).unwrap();
    }

    #[test]
    fn dot_contains_every_edge() {
        let g = Genotype::from_darts_string(DARTS_V2).unwrap();
        let dot = to_dot(&g.normal, "DARTS \"V2\" normal");
        assert!(dot.starts_with("digraph \"DARTS \\\"V2\\\" normal\" {"));
        for e in &g.normal.edges {
            let line = format!("\"{}\" -> \"n{}\" [label=\"{}\"", e.from, e.to, e.ops[0].op);
            assert!(dot.contains(&line), "{line}\n{dot}");
        }
        for j in &g.normal.concat {
            assert!(dot.contains(&format!("\"n{j}\" -> \"out\"")));
        }
        assert_eq!(dot.matches(" -> ").count(), g.normal.edges.len() + 4);
        assert!(dot.trim_end().ends_with('}'));
    }
}
