//! The geometry of a cell drawing (see the parent module's documentation): layers of slots
//! (nodes, labels, passing edges), their placement by relaxation and packing, and the
//! routed edges.

use std::fmt::Write as _;

use super::*;

/// An axis-aligned rectangle in SVG user units (`x` right, `y` down).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Rect {
    pub(super) x0: f64,
    pub(super) y0: f64,
    pub(super) x1: f64,
    pub(super) y1: f64,
}

impl Rect {
    pub(super) fn centered(cx: f64, cy: f64, w: f64, h: f64) -> Rect {
        Rect {
            x0: cx - w / 2.0,
            y0: cy - h / 2.0,
            x1: cx + w / 2.0,
            y1: cy + h / 2.0,
        }
    }

    /// True when the interiors intersect (touching edges do not count).
    #[cfg(test)]
    pub(super) fn intersects(&self, o: &Rect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }
}

/// A piece of a routed edge.
#[derive(Clone, Copy, Debug)]
pub(super) enum Seg {
    /// Cubic Bezier with horizontal end tangents.
    Cubic([(f64, f64); 4]),
    /// Straight horizontal pass through a layer (beside nodes, between or under labels).
    Line((f64, f64), (f64, f64)),
}

pub(super) fn cubic(a: (f64, f64), b: (f64, f64)) -> Seg {
    let dx = ((b.0 - a.0) * 0.5).max(10.0);
    Seg::Cubic([a, (a.0 + dx, a.1), (b.0 - dx, b.1), b])
}

pub(super) fn path_data(segs: &[Seg]) -> String {
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
pub(super) enum Vertex {
    Cell(Node),
    Out,
}

/// What occupies a slot of a layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum ItemKind {
    Vertex(Vertex),
    /// The label box of kept edge `i`.
    Label(usize),
    /// An edge passing through the layer as a horizontal line.
    Pass,
}

/// One slot of a layer: a box of height `h` centred at `y`, kept at least `margin` (the larger
/// of the two neighbours' margins) away from the other slots of its layer.
#[derive(Clone, Debug)]
pub(super) struct Item {
    pub(super) layer: usize,
    pub(super) kind: ItemKind,
    pub(super) w: f64,
    pub(super) h: f64,
    pub(super) margin: f64,
    pub(super) y: f64,
    /// Canonical order of vertices within a column (vertices keep it; other items float).
    pub(super) key: usize,
}

/// An edge (kept edge or concat link) as a chain of items, one per layer it crosses.
pub(super) struct Chain {
    pub(super) edge: Option<usize>,
    pub(super) from: usize,
    pub(super) to: usize,
    pub(super) items: Vec<usize>,
}

impl Chain {
    /// Source vertex, the items, target vertex.
    pub(super) fn full(&self) -> Vec<usize> {
        let mut v = Vec::with_capacity(self.items.len() + 2);
        v.push(self.from);
        v.extend_from_slice(&self.items);
        v.push(self.to);
        v
    }
}

/// A node box of the layout.
#[derive(Clone, Debug)]
pub(super) struct NodeBox {
    pub(super) id: String,
    pub(super) caption: Option<&'static str>,
    pub(super) fill: &'static str,
    pub(super) rect: Rect,
}

/// A label box of the layout: the op lines of kept edge `edge`.
#[derive(Clone, Debug)]
pub(super) struct LabelBox {
    pub(super) edge: usize,
    pub(super) rect: Rect,
    pub(super) lines: Vec<String>,
}

/// A routed edge: kept edge `edge`, or a concat link when `None`.
#[derive(Clone, Debug)]
pub(super) struct Route {
    pub(super) edge: Option<usize>,
    pub(super) segs: Vec<Seg>,
}

/// The computed geometry of a cell drawing; every box lies inside `[0, width] x [0, height]`.
#[derive(Clone, Debug)]
pub(super) struct CellLayout {
    pub(super) width: f64,
    pub(super) height: f64,
    pub(super) nodes: Vec<NodeBox>,
    pub(super) labels: Vec<LabelBox>,
    pub(super) routes: Vec<Route>,
}

/// Isotonic regression with unit weights (pool adjacent violators): the non-decreasing
/// sequence closest to `t` in least squares.
pub(super) fn isotonic(t: &[f64]) -> Vec<f64> {
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
pub(super) fn pack_layer(ids: &[usize], items: &mut [Item], desired: &[f64]) {
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
pub(super) fn layout(cell: &CellGenotype, title: &str) -> CellLayout {
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
