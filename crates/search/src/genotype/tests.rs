use serde_json::Value;

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
