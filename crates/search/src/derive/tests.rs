use super::*;
use crate::bayes::{updated_bayesnas_prior, GroupKind};
use crate::space::SearchSpace;
use Node::{In0, In1, Inter};

fn rel(edges: Vec<Edge>, gamma0: Vec<f64>, gamma_tilde: Vec<Vec<f64>>) -> CellRelevance {
    CellRelevance {
        edges,
        ops: vec![Op::SepConv3x3, Op::MaxPool3x3, Op::SkipConnect],
        gamma0,
        gamma_tilde,
    }
}

fn ops_of(cell: &CellGenotype, from: Node, to: usize) -> Option<Vec<Op>> {
    cell.edges
        .iter()
        .find(|e| e.from == from && e.to == to)
        .map(|e| e.ops.iter().map(|o| o.op).collect())
}

#[test]
fn tau_zero_keeps_everything() {
    let space = SearchSpace::darts();
    let prior = Prior::new(&space).unwrap();
    let mut r = prior.cell_relevance(CellType::Normal);
    r.gamma_tilde[3][2] = 0.0; // even a dead op is kept with tau = 0
    let d = derive_threshold(&r, 0.0, "normal").unwrap();
    assert_eq!(d.genotype.edges.len(), 14);
    assert!(d.genotype.edges.iter().all(|e| e.ops.len() == 7));
    assert_eq!(d.genotype.concat, [0, 1, 2, 3]);
    assert!(d.repairs.is_empty());
    d.genotype.validate("normal").unwrap();
}

#[test]
fn thresholds_select_ops_and_edges() {
    // in0->n0: strong; in1->n0: weak parent (dropped); in0->n1: ok parent, ops all weak.
    let r = rel(
        vec![Edge::new(In0, 0), Edge::new(In1, 0), Edge::new(In0, 1)],
        vec![1.0, 0.1, 0.8],
        vec![
            vec![0.9, 0.5, 0.2],
            vec![1.0, 1.0, 1.0],
            vec![0.3, 0.4, 0.1],
        ],
    );
    let d = derive_threshold(&r, 0.5, "normal").unwrap();
    let g = &d.genotype;
    // Max gamma_tilde = 1.0: ops >= 0.5 are kept; ordered by decreasing relevance.
    assert_eq!(
        ops_of(g, In0, 0),
        Some(vec![Op::SepConv3x3, Op::MaxPool3x3])
    );
    assert_eq!(ops_of(g, In1, 0), None);
    // Edge kept, ops all under threshold: keeps the best (max_pool, 0.4).
    assert_eq!(ops_of(g, In0, 1), Some(vec![Op::MaxPool3x3]));
    assert_eq!(
        d.repairs[0],
        Repair::OpRestored {
            edge: Edge::new(In0, 1),
            op: Op::MaxPool3x3
        }
    );
    assert_eq!(g.edges[0].ops[0].relevance, Some(0.9));
    // n2, n3 have no edges at all: removed (no outgoing edges to drop).
    assert_eq!(g.concat, [0, 1]);
}

#[test]
fn edge_scope_compares_ops_with_their_own_edge() {
    // Edge in1->n0 is weak overall but one of its ops clearly beats the others.
    let r = rel(
        vec![Edge::new(In0, 0), Edge::new(In1, 0)],
        vec![1.0, 1.0],
        vec![vec![1.0, 0.9, 0.2], vec![0.2, 0.05, 0.19]],
    );
    let cell = derive_threshold(&r, 0.5, "normal").unwrap();
    // Cell scope: nothing of in1->n0 reaches 0.5 * 1.0, so the repair keeps its best op.
    assert_eq!(ops_of(&cell.genotype, In1, 0), Some(vec![Op::SepConv3x3]));
    assert!(matches!(cell.repairs[0], Repair::OpRestored { .. }));
    let rules = CellRules {
        op_scope: OpScope::Edge,
        ..CellRules::default()
    };
    let edge = derive_threshold_with(&r, 0.5, rules, "normal").unwrap();
    let g = &edge.genotype;
    assert!(
        !edge
            .repairs
            .iter()
            .any(|r| matches!(r, Repair::OpRestored { .. })),
        "{:?}",
        edge.repairs
    );
    assert_eq!(
        ops_of(g, In0, 0),
        Some(vec![Op::SepConv3x3, Op::MaxPool3x3])
    );
    assert_eq!(
        ops_of(g, In1, 0),
        Some(vec![Op::SepConv3x3, Op::SkipConnect])
    );
    // Relevances are relative to the edge's best op.
    let e1 = g.edges.iter().find(|e| e.from == In1).unwrap();
    assert_eq!(e1.ops[0].relevance, Some(1.0));
    assert!((e1.ops[1].relevance.unwrap() - 0.95).abs() < 1e-12);
}

#[test]
fn keep_best_input_gives_every_node_an_input() {
    // Both inputs of n1 fail the edge test; in1->n1 is the stronger of them (best op 0.6).
    let r = rel(
        vec![
            Edge::new(In0, 0),
            Edge::new(In0, 1),
            Edge::new(In1, 1),
            Edge::new(In0, 2),
            Edge::new(In0, 3),
            Edge::new(Inter(1), 3),
        ],
        vec![1.0, 0.1, 0.2, 1.0, 1.0, 1.0],
        vec![
            vec![1.0, 0.5, 0.5],
            vec![0.3, 0.2, 0.1],
            vec![0.1, 0.6, 0.2],
            vec![1.0, 1.0, 1.0],
            vec![1.0, 1.0, 1.0],
            vec![1.0, 1.0, 1.0],
        ],
    );
    let removed = derive_threshold(&r, 0.5, "normal").unwrap();
    assert_eq!(removed.genotype.concat, [0, 2, 3]);
    let rules = CellRules {
        node_repair: NodeRepair::KeepBestInput,
        ..CellRules::default()
    };
    let kept = derive_threshold_with(&r, 0.5, rules, "normal").unwrap();
    let g = &kept.genotype;
    assert_eq!(g.concat, [0, 1, 2, 3]);
    assert_eq!(ops_of(g, In1, 1), Some(vec![Op::MaxPool3x3]));
    assert_eq!(ops_of(g, In0, 1), None);
    assert!(ops_of(g, Inter(1), 3).is_some());
    assert_eq!(
        kept.repairs,
        vec![Repair::InputRestored {
            edge: Edge::new(In1, 1),
            op: Op::MaxPool3x3
        }]
    );
    g.validate("normal").unwrap();
    // Edges stay sorted by target node, then source.
    let keys: Vec<_> = g.edges.iter().map(|e| (e.to, e.from)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

#[test]
fn param_free_cap_swaps_the_cheapest_edges_to_parametric_ops() {
    // ops: [sep_conv_3x3, max_pool_3x3, skip_connect]
    let r = rel(
        vec![
            Edge::new(In0, 0),
            Edge::new(In1, 0),
            Edge::new(In0, 1),
            Edge::new(In1, 1),
        ],
        vec![1.0; 4],
        vec![
            vec![0.1, 0.9, 0.2],  // pool, far ahead of the conv (cost 0.8)
            vec![0.5, 0.6, 0.1],  // pool, just ahead (cost 0.1)
            vec![0.3, 0.1, 0.35], // skip, just ahead (cost 0.05)
            vec![0.9, 0.1, 0.1],  // conv
        ],
    );
    let capped = |cap| {
        let rules = CellRules {
            max_param_free: Some(cap),
            ..CellRules::default()
        };
        derive_darts_with(&r, rules, "normal").unwrap()
    };
    let free = |d: &CellDerivation| {
        d.genotype
            .edges
            .iter()
            .flat_map(|e| &e.ops)
            .filter(|o| o.op.is_parameter_free())
            .count()
    };
    let none = derive_darts(&r, "normal").unwrap();
    assert_eq!(free(&none), 3);
    assert_eq!(free(&capped(3)), 3);
    let two = capped(2);
    assert_eq!(free(&two), 2);
    assert_eq!(ops_of(&two.genotype, In0, 1), Some(vec![Op::SepConv3x3]));
    let one = capped(1);
    assert_eq!(free(&one), 1);
    assert_eq!(ops_of(&one.genotype, In1, 0), Some(vec![Op::SepConv3x3]));
    assert_eq!(ops_of(&one.genotype, In0, 0), Some(vec![Op::MaxPool3x3]));
    assert_eq!(
        one.repairs[..2],
        [
            Repair::ParamFreeCapped {
                edge: Edge::new(In0, 1),
                removed: Op::SkipConnect,
                added: Some(Op::SepConv3x3)
            },
            Repair::ParamFreeCapped {
                edge: Edge::new(In1, 0),
                removed: Op::MaxPool3x3,
                added: Some(Op::SepConv3x3)
            },
        ]
    );
    // (nodes n2 and n3 have no edges in this toy space and are removed as usual)
    // With several ops on an edge, the cap drops the weakest parameter-free one.
    let t = derive_threshold_with(
        &r,
        0.05,
        CellRules {
            max_param_free: Some(3),
            ..CellRules::default()
        },
        "normal",
    )
    .unwrap();
    // 8 parameter-free ops pass tau = 0.05; the five weakest (four at 0.1, then the skip
    // at 0.2 of in0->n0) go.
    assert_eq!(free(&t), 3);
    assert_eq!(
        ops_of(&t.genotype, In0, 0),
        Some(vec![Op::MaxPool3x3, Op::SepConv3x3])
    );
    assert_eq!(
        ops_of(&t.genotype, In0, 1),
        Some(vec![Op::SkipConnect, Op::SepConv3x3])
    );
}

#[test]
fn node_without_inputs_is_removed_with_outgoing_edges_and_concat_slot() {
    // n0 only fed by a dropped edge; n0->n1 and n0->n3 must go, n1 survives via in0.
    let r = rel(
        vec![
            Edge::new(In1, 0),
            Edge::new(In0, 1),
            Edge::new(Inter(0), 1),
            Edge::new(In0, 2),
            Edge::new(Inter(0), 3),
            Edge::new(In1, 3),
        ],
        vec![0.01, 1.0, 1.0, 1.0, 1.0, 1.0],
        vec![vec![1.0; 3]; 6],
    );
    let d = derive_threshold(&r, 0.5, "normal").unwrap();
    let g = &d.genotype;
    assert_eq!(g.concat, [1, 2, 3]);
    assert!(g.edges.iter().all(|e| e.from != Inter(0) && e.to != 0));
    assert_eq!(g.edges.len(), 3);
    assert_eq!(
        d.repairs,
        [Repair::NodeRemoved {
            node: 0,
            dropped: vec![Edge::new(Inter(0), 1), Edge::new(Inter(0), 3)]
        }]
    );
    g.validate("normal").unwrap();
}

#[test]
fn cascaded_removal() {
    // in1->n0 dropped => n0 dies => n1 (fed only by n0) dies => n2 (fed only by n1) dies;
    // n3 survives through in0, and its edge from n2 goes.
    let r = rel(
        vec![
            Edge::new(In1, 0),
            Edge::new(Inter(0), 1),
            Edge::new(Inter(1), 2),
            Edge::new(Inter(2), 3),
            Edge::new(In0, 3),
        ],
        vec![0.0, 1.0, 1.0, 1.0, 1.0],
        vec![
            vec![0.0; 3],
            vec![1.0; 3],
            vec![1.0; 3],
            vec![1.0; 3],
            vec![0.5; 3],
        ],
    );
    let d = derive_threshold(&r, 0.2, "normal").unwrap();
    assert_eq!(d.genotype.concat, [3]);
    assert_eq!(d.genotype.edges.len(), 1);
    assert_eq!(d.genotype.edges[0].from, In0);
    let removed: Vec<usize> = d
        .repairs
        .iter()
        .filter_map(|r| match r {
            Repair::NodeRemoved { node, .. } => Some(*node),
            _ => None,
        })
        .collect();
    assert_eq!(removed, [0, 1, 2]);
    d.genotype.validate("normal").unwrap();
}

#[test]
fn everything_dead_falls_back_to_one_input_edge() {
    let r = rel(
        vec![Edge::new(In1, 0), Edge::new(In0, 1), Edge::new(Inter(0), 1)],
        vec![0.0, 0.0, 0.0],
        vec![
            vec![0.0, 0.0, 0.0],
            vec![0.0, 0.2, 0.0],
            vec![0.0, 0.9, 0.0],
        ],
    );
    let d = derive_threshold(&r, 0.5, "reduce").unwrap();
    // Edges from inputs only; in0->n1 with max_pool has the best gamma_tilde among them.
    assert_eq!(d.genotype.concat, [1]);
    assert_eq!(ops_of(&d.genotype, In0, 1), Some(vec![Op::MaxPool3x3]));
    assert!(matches!(d.repairs.last(), Some(Repair::Fallback { .. })));
    d.genotype.validate("reduce").unwrap();
    // No edge leaves an input: typed error.
    let r = rel(vec![Edge::new(Inter(0), 1)], vec![0.0], vec![vec![0.0; 3]]);
    assert!(matches!(
        derive_threshold(&r, 0.5, "reduce"),
        Err(DeriveError::EmptyCell { .. })
    ));
}

#[test]
fn collapsed_parent_removes_edge() {
    let prior = updated_bayesnas_prior(|kind, g, n_cells, _| {
        // Edge 7 of the normal cell (n0->n3) has a zero parent switch.
        let dead = kind == GroupKind::Parent { edge: 7 } && n_cells == 6;
        let s = if dead {
            0.0
        } else {
            1.0 + 0.1 * (g % 5) as f64
        };
        (s, 0.01 * (1 + g % 3) as f64)
    });
    let d = derive(&prior, DeriveRule::Threshold { tau: 0.1 }).unwrap();
    let g = &d.genotype;
    assert!(ops_of(&g.normal, Inter(0), 3).is_none());
    assert!(ops_of(&g.reduce, Inter(0), 3).is_some());
    g.validate().unwrap();
    // The dead parent zeroed every child's effective relevance as well.
    let rel = prior.cell_relevance(CellType::Normal);
    assert_eq!(rel.gamma0[7], 0.0);
    assert!(rel.gamma_tilde[7].iter().all(|&x| x == 0.0));
}

#[test]
fn darts_rule_picks_two_per_node() {
    let space = SearchSpace::darts();
    let prior = Prior::new(&space).unwrap();
    let mut r = prior.cell_relevance(CellType::Normal);
    // Node 3 (edges 9..14): make n1->n3 (edge 12) and in0->n3 (edge 10) the strongest.
    r.gamma_tilde[12][4] = 3.0;
    r.gamma_tilde[10][6] = 2.0;
    let d = derive_darts(&r, "normal").unwrap();
    let g = &d.genotype;
    for j in 0..4 {
        let pairs: usize = g
            .edges
            .iter()
            .filter(|e| e.to == j)
            .map(|e| e.ops.len())
            .sum();
        assert_eq!(pairs, 2, "node {j}");
    }
    assert!(g.edges.iter().all(|e| e.ops.len() == 1));
    let n3: Vec<_> = g.edges.iter().filter(|e| e.to == 3).collect();
    assert_eq!(n3[0].from, Inter(1));
    assert_eq!(n3[0].ops[0].op, Op::MaxPool3x3);
    assert_eq!(n3[1].from, In0);
    assert_eq!(n3[1].ops[0].op, Op::SkipConnect);
    // Ties (everything 1): DARTS order, i.e. DARTS inputs 0 and 1 = our in1, in0.
    let n0: Vec<_> = g.edges.iter().filter(|e| e.to == 0).collect();
    assert_eq!((n0[0].from, n0[1].from), (In1, In0));
    assert_eq!(g.concat, [0, 1, 2, 3]);
    let geno = Genotype {
        space: "darts".into(),
        normal: g.clone(),
        reduce: g.clone(),
    };
    assert!(geno.to_darts_string().is_some());
}

#[test]
fn bad_inputs_are_errors() {
    let r = rel(vec![Edge::new(In0, 0)], vec![1.0], vec![vec![1.0; 3]]);
    for tau in [-0.1, 1.5, f64::NAN] {
        assert!(matches!(
            derive_threshold(&r, tau, "normal"),
            Err(DeriveError::BadTau(_))
        ));
    }
    let mut bad = r.clone();
    bad.gamma0[0] = f64::NAN;
    assert!(derive_threshold(&bad, 0.5, "normal").is_err());
    let mut bad = r.clone();
    bad.gamma_tilde[0].pop();
    assert!(derive_darts(&bad, "normal").is_err());
    let mut bad = r;
    bad.gamma_tilde[0][1] = -1.0;
    let msg = derive_darts(&bad, "normal").unwrap_err().to_string();
    assert!(msg.contains("max_pool_3x3"), "{msg}");
}
