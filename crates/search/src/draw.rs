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

const NODE_W: f64 = 76.0;
const NODE_H: f64 = 40.0;
/// Least vertical clearance around a node box within its column.
const NODE_MARGIN: f64 = 22.0;
const MARGIN: f64 = 20.0;
const TITLE_H: f64 = 36.0;
const TITLE_CHAR_W: f64 = 9.5; // bold sans-serif at 16 px, generous
const LABEL_FONT: f64 = 12.0;
const LABEL_CHAR_W: f64 = 7.3; // monospace advance at 12 px, slightly generous
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

/// The opening `<svg>` element of a `w` x `h` picture and its `<title>`.
pub(crate) fn svg_open(w: f64, h: f64, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" \
         viewBox=\"0 0 {w:.1} {h:.1}\">"
    );
    let _ = writeln!(s, "  <title>{}</title>", xml_escape(title));
    s
}

/// The white background of a `w` x `h` picture and its bold title at `margin` (shared by the
/// cell drawings and the heat maps).
pub(crate) fn background_and_title(s: &mut String, w: f64, h: f64, margin: f64, title: &str) {
    let _ = writeln!(
        s,
        "  <rect x=\"0\" y=\"0\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"#ffffff\"/>"
    );
    let _ = writeln!(
        s,
        "  <text x=\"{margin}\" y=\"{:.1}\" font-family=\"sans-serif\" font-size=\"16\" \
         font-weight=\"bold\">{}</text>",
        margin + 16.0,
        xml_escape(title)
    );
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

/// An axis-aligned rectangle in SVG user units (`x` right, `y` down).
#[derive(Clone, Copy, Debug, PartialEq)]
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

    /// True when the interiors intersect (touching edges do not count).
    #[cfg(test)]
    fn intersects(&self, o: &Rect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }
}

/// A piece of a routed edge.
#[derive(Clone, Copy, Debug)]
enum Seg {
    /// Cubic Bezier with horizontal end tangents.
    Cubic([(f64, f64); 4]),
    /// Straight horizontal pass through a layer (beside nodes, between or under labels).
    Line((f64, f64), (f64, f64)),
}

fn cubic(a: (f64, f64), b: (f64, f64)) -> Seg {
    let dx = ((b.0 - a.0) * 0.5).max(10.0);
    Seg::Cubic([a, (a.0 + dx, a.1), (b.0 - dx, b.1), b])
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

/// A drawn vertex: a cell node or the output (concat) node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Vertex {
    Cell(Node),
    Out,
}

/// What occupies a slot of a layer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ItemKind {
    Vertex(Vertex),
    /// The label box of kept edge `i`.
    Label(usize),
    /// An edge passing through the layer as a horizontal line.
    Pass,
}

/// One slot of a layer: a box of height `h` centred at `y`, kept at least `margin` (the larger
/// of the two neighbours' margins) away from the other slots of its layer.
#[derive(Clone, Debug)]
struct Item {
    layer: usize,
    kind: ItemKind,
    w: f64,
    h: f64,
    margin: f64,
    y: f64,
    /// Canonical order of vertices within a column (vertices keep it; other items float).
    key: usize,
}

/// An edge (kept edge or concat link) as a chain of items, one per layer it crosses.
struct Chain {
    edge: Option<usize>,
    from: usize,
    to: usize,
    items: Vec<usize>,
}

impl Chain {
    /// Source vertex, the items, target vertex.
    fn full(&self) -> Vec<usize> {
        let mut v = Vec::with_capacity(self.items.len() + 2);
        v.push(self.from);
        v.extend_from_slice(&self.items);
        v.push(self.to);
        v
    }
}

/// A node box of the layout.
#[derive(Clone, Debug)]
struct NodeBox {
    id: String,
    caption: Option<&'static str>,
    fill: &'static str,
    rect: Rect,
}

/// A label box of the layout: the op lines of kept edge `edge`.
#[derive(Clone, Debug)]
struct LabelBox {
    edge: usize,
    rect: Rect,
    lines: Vec<String>,
}

/// A routed edge: kept edge `edge`, or a concat link when `None`.
#[derive(Clone, Debug)]
struct Route {
    edge: Option<usize>,
    segs: Vec<Seg>,
}

/// The computed geometry of a cell drawing; every box lies inside `[0, width] x [0, height]`.
#[derive(Clone, Debug)]
struct CellLayout {
    width: f64,
    height: f64,
    nodes: Vec<NodeBox>,
    labels: Vec<LabelBox>,
    routes: Vec<Route>,
}

/// Isotonic regression with unit weights (pool adjacent violators): the non-decreasing
/// sequence closest to `t` in least squares.
fn isotonic(t: &[f64]) -> Vec<f64> {
    let mut blocks: Vec<(f64, usize)> = Vec::new();
    for &v in t {
        blocks.push((v, 1));
        while blocks.len() >= 2 {
            let (s1, n1) = blocks[blocks.len() - 1];
            let (s0, n0) = blocks[blocks.len() - 2];
            if s0 / n0 as f64 > s1 / n1 as f64 {
                blocks.pop();
                let last = blocks.len() - 1;
                blocks[last] = (s0 + s1, n0 + n1);
            } else {
                break;
            }
        }
    }
    blocks
        .into_iter()
        .flat_map(|(s, n)| std::iter::repeat_n(s / n as f64, n))
        .collect()
}

/// Places the items of one layer as close as possible (least squares) to `desired` without
/// overlaps: sorted by desired position (vertices keep their canonical order among the vertex
/// slots), then spaced at least their heights and margins apart.
fn pack_layer(ids: &[usize], items: &mut [Item], desired: &[f64]) {
    let mut ids = ids.to_vec();
    ids.sort_by(|&a, &b| desired[a].total_cmp(&desired[b]).then(a.cmp(&b)));
    let slots: Vec<usize> = (0..ids.len())
        .filter(|&p| matches!(items[ids[p]].kind, ItemKind::Vertex(_)))
        .collect();
    let mut verts: Vec<usize> = slots.iter().map(|&p| ids[p]).collect();
    verts.sort_by_key(|&i| items[i].key);
    for (&p, v) in slots.iter().zip(verts) {
        ids[p] = v;
    }
    let mut offsets = Vec::with_capacity(ids.len());
    let mut o = 0.0;
    for (k, &i) in ids.iter().enumerate() {
        if k > 0 {
            let prev = &items[ids[k - 1]];
            o += prev.h / 2.0 + prev.margin.max(items[i].margin) + items[i].h / 2.0;
        }
        offsets.push(o);
    }
    let targets: Vec<f64> = ids
        .iter()
        .zip(&offsets)
        .map(|(&i, o)| desired[i] - o)
        .collect();
    for ((&i, z), o) in ids.iter().zip(isotonic(&targets)).zip(&offsets) {
        items[i].y = z + o;
    }
}

/// Computes the drawing of one cell (see the module documentation).
fn layout(cell: &CellGenotype, title: &str) -> CellLayout {
    let nodes = drawn_nodes(cell);
    // Depth: inputs 0, node j = 1 + the deepest of its (earlier) sources.
    let mut depth = std::collections::BTreeMap::new();
    depth.insert(Node::In0, 0usize);
    depth.insert(Node::In1, 0usize);
    for n in &nodes {
        if let Node::Inter(j) = *n {
            let d = cell
                .incoming(j)
                .filter_map(|e| depth.get(&e.from).copied())
                .max()
                .unwrap_or(0)
                + 1;
            depth.insert(*n, d);
        }
    }
    let out_depth = depth.values().copied().max().unwrap_or(0) + 1;
    let n_layers = 2 * out_depth + 1;

    // Vertices in the even layers.
    let mut items: Vec<Item> = Vec::new();
    let mut vertex_item = std::collections::BTreeMap::new();
    let vertices = nodes
        .iter()
        .map(|&n| (Vertex::Cell(n), depth[&n]))
        .chain(std::iter::once((Vertex::Out, out_depth)));
    for (key, (v, d)) in vertices.enumerate() {
        vertex_item.insert(v, items.len());
        items.push(Item {
            layer: 2 * d,
            kind: ItemKind::Vertex(v),
            w: NODE_W,
            h: NODE_H,
            margin: NODE_MARGIN,
            y: 0.0,
            key,
        });
    }

    // Each label goes into one gap layer its edge crosses: the least loaded one (then the one
    // nearest the middle of the edge, then the leftmost); edges with no choice go first.
    let label_lines: Vec<Vec<String>> = cell.edges.iter().map(op_lines).collect();
    let label_size = |lines: &[String]| {
        let w = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as f64 * LABEL_CHAR_W
            + 2.0 * LABEL_PAD;
        (w, lines.len() as f64 * LABEL_LINE_H + 2.0 * LABEL_PAD)
    };
    let span = |e: &KeptEdge| {
        let d0 = depth[&e.from];
        let d1 = depth[&Node::Inter(e.to)];
        (d0, d1.max(d0 + 1))
    };
    let mut order: Vec<usize> = (0..cell.edges.len()).collect();
    order.sort_by_key(|&i| {
        let (d0, d1) = span(&cell.edges[i]);
        (d1 - d0, i)
    });
    let mut load = vec![0.0f64; out_depth];
    let mut label_gap = vec![0usize; cell.edges.len()];
    for i in order {
        let (d0, d1) = span(&cell.edges[i]);
        let g = (d0..d1)
            .min_by(|&a, &b| {
                load[a]
                    .total_cmp(&load[b])
                    .then(
                        (2 * a + 1)
                            .abs_diff(d0 + d1)
                            .cmp(&(2 * b + 1).abs_diff(d0 + d1)),
                    )
                    .then(a.cmp(&b))
            })
            .unwrap_or(d0);
        label_gap[i] = g;
        load[g] += label_size(&label_lines[i]).1 + LABEL_MARGIN;
    }

    // Chains: one item per layer strictly between the two vertex layers.
    let mut chains: Vec<Chain> = Vec::new();
    let mut push_chain = |items: &mut Vec<Item>,
                          edge: Option<usize>,
                          from: Vertex,
                          to: Vertex,
                          label: Option<(usize, f64, f64)>| {
        let (f, t) = (vertex_item[&from], vertex_item[&to]);
        let (l0, l1) = (items[f].layer, items[t].layer);
        // A backward or self edge (invalid cells only) gets just its label after the source.
        let layers: Vec<usize> = if l1 > l0 {
            (l0 + 1..l1).collect()
        } else {
            vec![l0 + 1]
        };
        let mut ids = Vec::with_capacity(layers.len());
        for layer in layers {
            let (kind, w, h, margin) = match label {
                Some((gap, w, h)) if layer == 2 * gap + 1 || l1 <= l0 => {
                    (ItemKind::Label(edge.unwrap_or(0)), w, h, LABEL_MARGIN)
                }
                _ => (ItemKind::Pass, 0.0, PASS_H, PASS_MARGIN),
            };
            ids.push(items.len());
            items.push(Item {
                layer,
                kind,
                w,
                h,
                margin,
                y: 0.0,
                key: usize::MAX,
            });
        }
        chains.push(Chain {
            edge,
            from: f,
            to: t,
            items: ids,
        });
    };
    for (i, e) in cell.edges.iter().enumerate() {
        let (w, h) = label_size(&label_lines[i]);
        push_chain(
            &mut items,
            Some(i),
            Vertex::Cell(e.from),
            Vertex::Cell(Node::Inter(e.to)),
            Some((label_gap[i], w, h)),
        );
    }
    for &j in &cell.concat {
        push_chain(
            &mut items,
            None,
            Vertex::Cell(Node::Inter(j)),
            Vertex::Out,
            None,
        );
    }

    // Start: vertices stacked in canonical order, chain items on the straight lines.
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); n_layers];
    for (i, it) in items.iter().enumerate() {
        layers[it.layer].push(i);
    }
    for ids in &layers {
        let vs: Vec<usize> = ids
            .iter()
            .copied()
            .filter(|&i| matches!(items[i].kind, ItemKind::Vertex(_)))
            .collect();
        let step = NODE_H + 2.0 * NODE_MARGIN;
        for (r, &i) in vs.iter().enumerate() {
            items[i].y = (r as f64 - (vs.len() as f64 - 1.0) / 2.0) * step;
        }
    }
    for c in &chains {
        let (y0, y1) = (items[c.from].y, items[c.to].y);
        let n = c.items.len() as f64 + 1.0;
        for (k, &i) in c.items.iter().enumerate() {
            items[i].y = y0 + (y1 - y0) * (k as f64 + 1.0) / n;
        }
    }
    // Relax: every item moves towards the mean of its neighbours along its chains, then each
    // layer is packed without overlaps. A fixed number of rounds keeps it deterministic.
    for _ in 0..LAYOUT_ROUNDS {
        let mut desired: Vec<f64> = items.iter().map(|it| it.y).collect();
        let mut sum = vec![0.0; items.len()];
        let mut cnt = vec![0usize; items.len()];
        for c in &chains {
            let full = c.full();
            for k in 1..full.len() - 1 {
                desired[full[k]] = (items[full[k - 1]].y + items[full[k + 1]].y) / 2.0;
            }
            sum[c.from] += items[full[1]].y;
            cnt[c.from] += 1;
            sum[c.to] += items[full[full.len() - 2]].y;
            cnt[c.to] += 1;
        }
        for (i, d) in desired.iter_mut().enumerate() {
            if cnt[i] > 0 {
                *d = sum[i] / cnt[i] as f64;
            }
        }
        for ids in &layers {
            pack_layer(ids, &mut items, &desired);
        }
    }

    // Horizontal geometry: layer widths, and curve space between layers growing with the
    // steepest curve crossing it.
    let layer_w: Vec<f64> = layers
        .iter()
        .enumerate()
        .map(|(l, ids)| {
            let widest = ids.iter().map(|&i| items[i].w).fold(0.0, f64::max);
            if l % 2 == 0 {
                widest.max(NODE_W)
            } else {
                widest
            }
        })
        .collect();
    let mut rise = vec![0.0f64; n_layers];
    for c in &chains {
        for w in c.full().windows(2) {
            let (a, b) = (&items[w[0]], &items[w[1]]);
            if b.layer == a.layer + 1 {
                rise[a.layer] = rise[a.layer].max((b.y - a.y).abs());
            }
        }
    }
    let mut layer_x = Vec::with_capacity(n_layers);
    let mut x = MARGIN;
    for l in 0..n_layers {
        layer_x.push(x);
        x += layer_w[l] + (rise[l] * CURVE_SLOPE).clamp(CURVE_MIN_W, CURVE_MAX_W);
    }
    let content_x1 = layer_x[n_layers - 1] + layer_w[n_layers - 1] + MARGIN;
    let title_w = title.chars().count() as f64 * TITLE_CHAR_W + 2.0 * MARGIN;
    let width = content_x1.max(title_w);

    // Vertical normalisation: content starts under the title.
    let top = items
        .iter()
        .map(|it| it.y - it.h / 2.0)
        .fold(f64::INFINITY, f64::min);
    let shift = if top.is_finite() {
        MARGIN + TITLE_H - top
    } else {
        0.0
    };
    for it in &mut items {
        it.y += shift;
    }
    let bottom = items
        .iter()
        .map(|it| it.y + it.h / 2.0)
        .fold(MARGIN + TITLE_H, f64::max);
    let height = bottom + MARGIN;

    let item_rect = |it: &Item| {
        let cx = layer_x[it.layer] + layer_w[it.layer] / 2.0;
        Rect::centered(cx, it.y, it.w, it.h)
    };

    // Ports: the edges at a vertex side are spread over its height in the order of the
    // items they come from or go to.
    let mut ports_in: Vec<Vec<(f64, usize)>> = vec![Vec::new(); items.len()];
    let mut ports_out: Vec<Vec<(f64, usize)>> = vec![Vec::new(); items.len()];
    for (ci, c) in chains.iter().enumerate() {
        let full = c.full();
        ports_out[c.from].push((items[full[1]].y, ci));
        ports_in[c.to].push((items[full[full.len() - 2]].y, ci));
    }
    let spread = |list: &mut Vec<(f64, usize)>, y: f64| -> Vec<(usize, f64)> {
        list.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let k = list.len();
        let step = if k > 1 {
            PORT_STEP.min((NODE_H - 12.0) / (k - 1) as f64)
        } else {
            0.0
        };
        list.iter()
            .enumerate()
            .map(|(r, &(_, ci))| (ci, y + (r as f64 - (k as f64 - 1.0) / 2.0) * step))
            .collect()
    };
    let mut out_port = vec![0.0; chains.len()];
    let mut in_port = vec![0.0; chains.len()];
    for i in 0..items.len() {
        for (ci, y) in spread(&mut ports_out[i], items[i].y) {
            out_port[ci] = y;
        }
        for (ci, y) in spread(&mut ports_in[i], items[i].y) {
            in_port[ci] = y;
        }
    }

    let mut routes = Vec::with_capacity(chains.len());
    for (ci, c) in chains.iter().enumerate() {
        let from = item_rect(&items[c.from]);
        let to = item_rect(&items[c.to]);
        let mut segs = Vec::new();
        let mut at = (from.x1, out_port[ci]);
        for &i in &c.items {
            let it = &items[i];
            let entry = (layer_x[it.layer], it.y);
            let exit = (layer_x[it.layer] + layer_w[it.layer], it.y);
            segs.push(cubic(at, entry));
            if exit.0 > entry.0 {
                segs.push(Seg::Line(entry, exit));
            }
            at = exit;
        }
        segs.push(cubic(at, (to.x0 - 2.0, in_port[ci])));
        routes.push(Route { edge: c.edge, segs });
    }

    let mut node_boxes = Vec::new();
    let mut labels = Vec::new();
    for it in &items {
        match it.kind {
            ItemKind::Vertex(Vertex::Cell(n)) => node_boxes.push(NodeBox {
                id: node_id(n),
                caption: node_caption(n),
                fill: if n.is_input() { "#dbe9f6" } else { "#fff2cc" },
                rect: item_rect(it),
            }),
            ItemKind::Vertex(Vertex::Out) => node_boxes.push(NodeBox {
                id: "out".to_string(),
                caption: Some("c_{k}"),
                fill: "#d9ead3",
                rect: item_rect(it),
            }),
            ItemKind::Label(e) => labels.push(LabelBox {
                edge: e,
                rect: item_rect(it),
                lines: label_lines[e].clone(),
            }),
            ItemKind::Pass => {}
        }
    }
    labels.sort_by_key(|l| l.edge);
    CellLayout {
        width,
        height,
        nodes: node_boxes,
        labels,
        routes,
    }
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

    fn dense_cell(space: &crate::space::SearchSpace, ct: crate::space::CellType) -> CellGenotype {
        let edges: Vec<KeptEdge> = space
            .edges(ct)
            .iter()
            .map(|e| KeptEdge {
                from: e.from,
                to: e.to,
                ops: crate::space::Op::ALL
                    .iter()
                    .enumerate()
                    .map(|(k, &op)| crate::genotype::KeptOp {
                        op,
                        relevance: Some(0.74 - 0.01 * k as f64),
                    })
                    .collect(),
            })
            .collect();
        let mut concat: Vec<usize> = edges.iter().map(|e| e.to).collect();
        concat.sort_unstable();
        concat.dedup();
        CellGenotype { edges, concat }
    }

    /// The drawing properties the layout promises: no two label boxes intersect, no label box
    /// intersects a node box, no two node boxes intersect, everything inside the picture.
    fn check_layout(l: &CellLayout) -> Result<(), String> {
        for (i, a) in l.labels.iter().enumerate() {
            for b in &l.labels[i + 1..] {
                if a.rect.intersects(&b.rect) {
                    return Err(format!(
                        "labels of edges {} and {} overlap: {a:?} {b:?}",
                        a.edge, b.edge
                    ));
                }
            }
            for n in &l.nodes {
                if a.rect.intersects(&n.rect) {
                    return Err(format!(
                        "label of edge {} overlaps node {}: {a:?} {n:?}",
                        a.edge, n.id
                    ));
                }
            }
        }
        for (i, a) in l.nodes.iter().enumerate() {
            for b in &l.nodes[i + 1..] {
                if a.rect.intersects(&b.rect) {
                    return Err(format!("nodes {} and {} overlap", a.id, b.id));
                }
            }
        }
        let rects = l
            .labels
            .iter()
            .map(|b| b.rect)
            .chain(l.nodes.iter().map(|n| n.rect));
        for r in rects {
            if !(r.x0 >= 0.0 && r.y0 >= 0.0 && r.x1 <= l.width && r.y1 <= l.height) {
                return Err(format!("{r:?} outside {} x {}", l.width, l.height));
            }
        }
        Ok(())
    }

    #[test]
    fn dense_cells_have_no_overlapping_boxes() {
        use crate::space::{CellType, SearchSpace};
        let mut failures = Vec::new();
        for space in [SearchSpace::bayesnas(), SearchSpace::darts()] {
            for ct in [CellType::Normal, CellType::Reduce] {
                let cell = dense_cell(&space, ct);
                cell.validate("cell").unwrap();
                let l = layout(&cell, "dense");
                assert_eq!(l.labels.len(), cell.edges.len());
                assert_eq!(l.nodes.len(), cell.concat.len() + 3);
                assert_eq!(l.routes.len(), cell.edges.len() + cell.concat.len());
                if let Err(e) = check_layout(&l) {
                    failures.push(format!("{} {ct}: {e}", space.name));
                }
                // The picture stays reasonable: every label line is drawn once.
                let svg = to_svg(&cell, "dense");
                assert_eq!(svg.matches("sep_conv_3x3 0.74<").count(), cell.edges.len());
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn sparse_and_odd_cells_have_no_overlapping_boxes() {
        let g = Genotype::from_darts_string(DARTS_V2).unwrap();
        let mut cells = vec![g.normal.clone(), g.reduce.clone(), CellGenotype::default()];
        // Invalid cells must still draw: an edge from a node without inputs, a backward edge,
        // a self loop, a repeated edge, a long title.
        let mut odd = g.normal.clone();
        let op = |op| crate::genotype::KeptOp {
            op,
            relevance: None,
        };
        odd.edges.push(KeptEdge {
            from: Node::Inter(3),
            to: 1,
            ops: vec![op(crate::space::Op::SkipConnect)],
        });
        odd.edges.push(KeptEdge {
            from: Node::Inter(2),
            to: 2,
            ops: vec![op(crate::space::Op::MaxPool3x3)],
        });
        odd.edges.push(odd.edges[0].clone());
        odd.edges.push(KeptEdge {
            from: Node::Inter(7),
            to: 0,
            ops: vec![op(crate::space::Op::AvgPool3x3)],
        });
        cells.push(odd);
        for cell in &cells {
            let l = layout(cell, &"a long title ".repeat(20));
            check_layout(&l).unwrap_or_else(|e| panic!("{e}\n{cell:?}"));
            assert_eq!(l.labels.len(), cell.edges.len());
            check_xml(&to_svg(cell, "odd")).unwrap();
        }
    }

    #[test]
    fn svg_is_deterministic() {
        use crate::space::{CellType, SearchSpace};
        let cell = dense_cell(&SearchSpace::darts(), CellType::Normal);
        assert_eq!(to_svg(&cell, "x"), to_svg(&cell, "x"));
    }

    /// Writes dense example drawings to `/tmp/draw_examples/` to look at:
    /// `cargo test -p bayesnas-search --lib draw::tests::write_examples -- --ignored`.
    #[test]
    #[ignore]
    fn write_examples() {
        use crate::space::{CellType, SearchSpace};
        let dir = std::path::Path::new("/tmp/draw_examples");
        std::fs::create_dir_all(dir).unwrap();
        for space in [SearchSpace::bayesnas(), SearchSpace::darts()] {
            for ct in [CellType::Normal, CellType::Reduce] {
                let cell = dense_cell(&space, ct);
                let title = format!("{} {ct} cell, all 7 ops kept", space.name);
                let file = dir.join(format!("dense_{}_{ct}.svg", space.name));
                std::fs::write(file, to_svg(&cell, &title)).unwrap();
            }
        }
        let g = Genotype::from_darts_string(DARTS_V2).unwrap();
        std::fs::write(
            dir.join("darts_v2_normal.svg"),
            to_svg(&g.normal, "DARTS_V2 normal"),
        )
        .unwrap();
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
