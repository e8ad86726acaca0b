use super::*;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn ops() -> Vec<String> {
    crate::space::Op::ALL
        .iter()
        .map(|o| o.name().to_string())
        .collect()
}

/// Text contents of the elements with `class="CLASS"` (their first text child).
fn texts_of_class(svg: &str, class: &str) -> Vec<String> {
    let pat = format!("class=\"{class}\"");
    svg.split(&pat)
        .skip(1)
        .map(|part| {
            // Cells are groups (rect, text); the others are text elements.
            let part = if class == "cell" {
                &part[part.find("<text").unwrap()..]
            } else {
                part
            };
            let start = part.find('>').unwrap() + 1;
            let end = start + part[start..].find('<').unwrap();
            part[start..end].to_string()
        })
        .collect()
}

fn example(rows: usize) -> (Vec<String>, Vec<Vec<f64>>, Vec<Vec<bool>>) {
    let labels = (0..rows)
        .map(|r| format!("in{} -> n{}", r % 2, r / 2))
        .collect();
    let values = (0..rows)
        .map(|r| {
            (0..7)
                .map(|c| 0.011 + 0.0137 * (r * 7 + c) as f64)
                .collect()
        })
        .collect();
    let kept = (0..rows)
        .map(|r| (0..7).map(|c| (r + c) % 5 == 0).collect())
        .collect();
    (labels, values, kept)
}

#[test]
fn format_sig3_cases() {
    for (v, s) in [
        (0.0, "0"),
        (0.74, "0.740"),
        (1.0, "1.00"),
        (12.345, "12.3"),
        (999.6, "1000"),
        (9.996, "10.0"),
        (0.0012345, "0.00123"),
        (-0.5, "-0.500"),
        (12345.0, "12345"),
        (123456.0, "1.23e5"),
        (0.00001234, "1.23e-5"),
        (f64::NAN, "nan"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
    ] {
        assert_eq!(format_sig3(v), s, "{v}");
    }
}

#[test]
fn shape_mismatch_is_an_error() {
    let (rows, values, kept) = example(3);
    let cols = ops();
    let f = |r: &[String], c: &[String], v: &[Vec<f64>], k: &[Vec<bool>]| {
        heatmap_svg("t", r, c, v, k, "cap", HeatScale::Global)
    };
    assert!(f(&rows, &cols, &values, &kept).is_ok());
    assert!(f(&rows, &cols, &values, &[]).is_ok());
    let e = f(&rows[..2], &cols, &values, &kept).unwrap_err();
    assert!(e.contains("3 rows of values for 2 row labels"), "{e}");
    let e = f(&rows, &cols[..6], &values, &kept).unwrap_err();
    assert!(
        e.contains("row 0") && e.contains("7 values for 6 column labels"),
        "{e}"
    );
    let e = f(&rows, &cols, &values, &kept[..1]).unwrap_err();
    assert!(e.contains("1 rows of kept flags"), "{e}");
    let mut bad = kept.clone();
    bad[2].pop();
    let e = f(&rows, &cols, &values, &bad).unwrap_err();
    assert!(e.contains("row 2") && e.contains("6 kept flags"), "{e}");
    // Empty maps are fine.
    let svg = f(&[], &cols, &[], &[]).unwrap();
    assert!(svg.contains("(no values)"));
}

#[test]
fn every_value_is_printed_once_and_kept_cells_are_framed() {
    let (rows, values, kept) = example(8);
    let cols = ops();
    for scale in [HeatScale::Global, HeatScale::PerRow] {
        let svg = heatmap_svg(
            "normal <cell>",
            &rows,
            &cols,
            &values,
            &kept,
            "relevance & co",
            scale,
        )
        .unwrap();
        let cells = texts_of_class(&svg, "cell");
        assert_eq!(cells.len(), 8 * 7);
        for (r, row) in values.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let t = format_sig3(v);
                assert_eq!(cells[r * 7 + c], t);
                assert_eq!(cells.iter().filter(|x| **x == t).count(), 1, "{t}");
                // Nowhere else as a whole text either.
                assert_eq!(svg.matches(&format!(">{t}<")).count(), 1, "{t}");
            }
        }
        // One frame per kept pair, at the kept cell.
        let lay = layout(
            "normal <cell>",
            &rows,
            &cols,
            &values,
            "relevance & co",
            &Scale::new(&values, scale),
        );
        let frames: Vec<&str> = svg.split("class=\"kept\"").skip(1).collect();
        let n_kept = kept.iter().flatten().filter(|&&k| k).count();
        assert_eq!(frames.len(), n_kept);
        for (r, row) in kept.iter().enumerate() {
            for (c, &k) in row.iter().enumerate() {
                let (x0, y0, _, _) = lay.cell(r, c);
                let at = format!(" x=\"{:.1}\" y=\"{:.1}\"", x0 + 1.5, y0 + 1.5);
                let framed = frames.iter().any(|f| f.starts_with(&at));
                assert_eq!(framed, k, "row {r} col {c}");
            }
        }
        assert!(svg.contains("stroke-width=\"3\""));
        // Escaped text.
        assert!(svg.contains("normal &lt;cell&gt;") && svg.contains("relevance &amp; co"));
        assert!(svg.contains("in0 -&gt; n0"));
        assert!(!svg.contains("<cell>"));
    }
}

#[test]
fn nan_and_infinities_do_not_panic() {
    let rows = strings(&["a", "b", "c"]);
    let cols = strings(&["x", "y"]);
    let values = vec![
        vec![f64::NAN, 0.5],
        vec![f64::INFINITY, -0.25],
        vec![f64::NAN, f64::NAN],
    ];
    for scale in [HeatScale::Global, HeatScale::PerRow] {
        let svg = heatmap_svg("t", &rows, &cols, &values, &[], "", scale).unwrap();
        let cells = texts_of_class(&svg, "cell");
        assert_eq!(cells, ["nan", "0.500", "inf", "-0.250", "nan", "nan"]);
        // NaN cells are grey with grey text.
        let nan_cells: Vec<&str> = svg
            .split("<g class=\"cell\">")
            .skip(1)
            .filter(|p| p.contains(">nan<"))
            .collect();
        assert_eq!(nan_cells.len(), 3);
        for p in nan_cells {
            assert!(p.contains(&format!("fill=\"{NAN_FILL}\"")), "{p}");
            assert!(p.contains(&format!("fill=\"{NAN_TEXT}\"")), "{p}");
        }
        assert!(!svg.contains("NaN"));
    }
    // All NaN: no maximum, still draws.
    let all_nan = vec![vec![f64::NAN; 2]; 3];
    let svg = heatmap_svg("t", &rows, &cols, &all_nan, &[], "", HeatScale::Global).unwrap();
    assert!(svg.contains("no finite values"));
}

#[test]
fn negative_values_use_a_diverging_scale() {
    let rows = strings(&["e0", "e1"]);
    let cols = strings(&["a", "b", "c"]);
    let values = vec![vec![-2.0, 0.0, 1.0], vec![0.5, -0.1, 2.0]];
    let sc = Scale::new(&values, HeatScale::Global);
    assert!(sc.diverging);
    assert_eq!(sc.colours(0, -2.0).0, hex(RDBU[0].1));
    assert_eq!(sc.colours(1, 2.0).0, hex(RDBU[10].1));
    assert_eq!(sc.colours(0, 0.0).0, hex(RDBU[5].1));
    let svg = heatmap_svg(
        "t",
        &rows,
        &cols,
        &values,
        &[],
        "loss rise",
        HeatScale::Global,
    )
    .unwrap();
    assert!(svg.contains(">-2.00<") && svg.contains(">+2.00<") && svg.contains("blue &lt; 0"));
    assert!(svg.contains("data min -2.00, max 2.00"));
    // Per row: each row's largest magnitude is the end of the scale.
    let sc = Scale::new(&values, HeatScale::PerRow);
    assert_eq!(sc.colours(0, 1.0).0, hex(interpolate(&RDBU, 0.5)));
    assert_eq!(sc.colours(1, 2.0).0, hex(RDBU[10].1));
    // Non-negative data: viridis from 0 to the maximum.
    let pos = vec![vec![0.0, 0.5, 1.0], vec![0.25, 0.0, 0.5]];
    let sc = Scale::new(&pos, HeatScale::Global);
    assert!(!sc.diverging);
    assert_eq!(sc.colours(0, 0.0).0, hex(VIRIDIS[0].1));
    assert_eq!(sc.colours(0, 1.0).0, hex(VIRIDIS[8].1));
    let sc = Scale::new(&pos, HeatScale::PerRow);
    assert_eq!(sc.colours(1, 0.5).0, hex(VIRIDIS[8].1));
    // All zero: no division by zero.
    let sc = Scale::new(&[vec![0.0, 0.0]], HeatScale::PerRow);
    assert_eq!(sc.colours(0, 0.0).0, hex(VIRIDIS[0].1));
}

/// Separating-axis test for two convex quadrilaterals.
fn quads_overlap(a: &[(f64, f64); 4], b: &[(f64, f64); 4]) -> bool {
    for q in [a, b] {
        for k in 0..4 {
            let (p, r) = (q[k], q[(k + 1) % 4]);
            let axis = (r.1 - p.1, p.0 - r.0);
            let proj = |q: &[(f64, f64); 4]| {
                let d: Vec<f64> = q.iter().map(|c| c.0 * axis.0 + c.1 * axis.1).collect();
                (
                    d.iter().copied().fold(f64::INFINITY, f64::min),
                    d.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                )
            };
            let ((a0, a1), (b0, b1)) = (proj(a), proj(b));
            if a1 <= b0 + 1e-9 || b1 <= a0 + 1e-9 {
                return false;
            }
        }
    }
    true
}

#[test]
fn column_headers_do_not_overlap() {
    let (rows, values, _) = example(4);
    let short: Vec<String> = strings(&["a", "b", "c", "d", "e", "f", "g"]);
    let long: Vec<String> = (0..7)
        .map(|c| format!("a_rather_long_operation_name_{c}"))
        .collect();
    let mut wide_values = values.clone();
    for r in &mut wide_values {
        r.extend(r.clone());
        r.extend(r.clone());
    }
    let many: Vec<String> = (0..28).map(|c| format!("op_{c}_sep_conv_3x3")).collect();
    let mut angles = Vec::new();
    for (cols, values) in [
        (&short, &values),
        (&ops(), &values),
        (&long, &values),
        (&many, &wide_values),
    ] {
        for scale in [HeatScale::Global, HeatScale::PerRow] {
            let sc = Scale::new(values, scale);
            let lay = layout("title", &rows, cols, values, "caption", &sc);
            let quads: Vec<[(f64, f64); 4]> = lay.headers.iter().map(HeaderBox::corners).collect();
            for (i, a) in quads.iter().enumerate() {
                for b in &quads[i + 1..] {
                    assert!(!quads_overlap(a, b), "{cols:?}: {a:?} {b:?}");
                }
                // Above the grid, inside the picture.
                for &(x, y) in a {
                    assert!(y <= lay.grid_y && y >= 0.0, "{cols:?} {y} {}", lay.grid_y);
                    assert!(x >= 0.0 && x <= lay.width, "{cols:?} {x} {}", lay.width);
                }
            }
            // Headers fit their column when horizontal.
            for (c, h) in lay.headers.iter().enumerate() {
                if h.angle == 0.0 {
                    let (x0, _, x1, _) = lay.cell(0, c);
                    assert!(h.x >= x0 && h.x + h.len <= x1);
                }
            }
            let (_, _, _, y1) = lay.cell(rows.len() - 1, cols.len() - 1);
            assert!(y1 < lay.legend_y && lay.legend_y < lay.height);
            angles.push(lay.headers[0].angle);
        }
    }
    // Both horizontal and rotated headers were exercised.
    assert!(
        angles.contains(&0.0) && angles.contains(&-45.0),
        "{angles:?}"
    );
}

/// Writes example heat maps to `/tmp/draw_examples/` to look at:
/// `cargo test -p bayesnas-search --lib heatmap::tests::write_examples -- --ignored`.
#[test]
#[ignore]
fn write_examples() {
    let dir = std::path::Path::new("/tmp/draw_examples");
    std::fs::create_dir_all(dir).unwrap();
    let space = crate::space::SearchSpace::darts();
    let rows: Vec<String> = space
        .normal
        .iter()
        .map(|e| format!("{} -> n{}", e.from, e.to))
        .collect();
    let values: Vec<Vec<f64>> = (0..rows.len())
        .map(|r| {
            (0..7)
                .map(|c| ((r * 7 + c) as f64 * 0.77).sin().abs() * (1.0 + r as f64 * 0.1))
                .collect()
        })
        .collect();
    let mut kept: Vec<Vec<bool>> = values
        .iter()
        .map(|r| r.iter().map(|&v| v > 0.9).collect())
        .collect();
    kept[0][0] = true;
    let mut with_nan = values.clone();
    with_nan[3][2] = f64::NAN;
    let svg = heatmap_svg(
        "darts normal cell: relevance",
        &rows,
        &ops(),
        &with_nan,
        &kept,
        "gamma_tilde / max gamma_tilde",
        HeatScale::Global,
    )
    .unwrap();
    std::fs::write(dir.join("heatmap_relevance.svg"), svg).unwrap();
    let signed: Vec<Vec<f64>> = values
        .iter()
        .enumerate()
        .map(|(r, row)| {
            row.iter()
                .map(|v| (v - 0.6) * 10f64.powi(r as i32 % 3 - 2))
                .collect()
        })
        .collect();
    let svg = heatmap_svg(
        "darts normal cell: perturbation",
        &rows,
        &ops(),
        &signed,
        &kept,
        "loss rise when the op is removed",
        HeatScale::PerRow,
    )
    .unwrap();
    std::fs::write(dir.join("heatmap_perturbation_per_row.svg"), svg).unwrap();
    let many: Vec<String> = (0..20).map(|c| format!("a_long_column_name_{c}")).collect();
    let wide: Vec<Vec<f64>> = (0..4)
        .map(|r| (0..20).map(|c| (r * 20 + c) as f64).collect())
        .collect();
    let svg = heatmap_svg(
        "rotated headers",
        &rows[..4],
        &many,
        &wide,
        &[],
        "counts",
        HeatScale::Global,
    )
    .unwrap();
    std::fs::write(dir.join("heatmap_rotated.svg"), svg).unwrap();
}
