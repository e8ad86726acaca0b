use super::layout::*;
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
