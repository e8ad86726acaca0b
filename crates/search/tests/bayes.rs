//! The hierarchical ARD prior and its closed-form update: the group layout, a hand-computed
//! update, each cell's own omega term, a parent's collapse, edge cases, errors that leave the
//! prior unchanged, the penalty and the serialised prior.

use bayesnas_search::bayes::{
    update_group, BayesError, CellTypeStats, GroupId, GroupKind, GroupStatus, GroupUpdate,
    NegativeCurvature, Prior, UpdateConfig, UpdateSummary,
};
use bayesnas_search::{CellType, Edge, Node, Op, SearchSpace};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * (1.0 + b.abs())
}

macro_rules! assert_close {
    ($a:expr, $b:expr) => {{
        let (a, b) = ($a, $b);
        assert!(close(a, b), "{} = {a} but expected {b}", stringify!($a));
    }};
}

/// 2 edges (in0->n0, in1->n0), 2 ops (sep_conv_3x3, skip_connect).
fn tiny_space() -> SearchSpace {
    let edges = vec![Edge::new(Node::In0, 0), Edge::new(Node::In1, 0)];
    SearchSpace {
        name: "tiny".into(),
        normal: edges.clone(),
        reduce: edges,
        ops: vec![Op::SepConv3x3, Op::SkipConnect],
    }
}

/// Sets group `g` of a 2-cell template: switches `s` and curvatures `h`, cell by cell.
fn set_two_cells(st: &mut CellTypeStats, g: GroupKind, s: (f64, f64), h: (f64, f64)) {
    st.set(g, 0, s.0, h.0).unwrap();
    st.set(g, 1, s.1, h.1).unwrap();
}

/// [`update_group`] with negative curvature rejected.
fn update_rejecting(
    gamma: f64,
    s: &[f64],
    h: &[f64],
    lambda: f64,
) -> Result<GroupUpdate, BayesError> {
    update_group(gamma, s, h, lambda, NegativeCurvature::Reject)
}

const P0: GroupKind = GroupKind::Parent { edge: 0 };
const P1: GroupKind = GroupKind::Parent { edge: 1 };
const C00: GroupKind = GroupKind::Child { edge: 0, op: 0 };
const C01: GroupKind = GroupKind::Child { edge: 0, op: 1 };
const C10: GroupKind = GroupKind::Child { edge: 1, op: 0 };
const C11: GroupKind = GroupKind::Child { edge: 1, op: 1 };

#[test]
fn group_layout_round_trips() {
    for n_ops in [1, 2, 7] {
        for i in 0..5 * (n_ops + 1) {
            assert_eq!(GroupKind::from_index(i, n_ops).index(n_ops), i);
        }
    }
    assert_eq!(GroupKind::Parent { edge: 1 }.index(7), 8);
    assert_eq!(GroupKind::Child { edge: 1, op: 6 }.index(7), 15);
}

/// Hand-computed update of a 2-cell, 2-edge, 2-op example (normal cells), prior gamma = 1
/// everywhere, lambda_parent = 0.5, lambda_child = 0.25.
#[test]
fn update_matches_hand_computation() {
    let space = tiny_space();
    let mut prior = Prior::new(&space).unwrap();
    let mut st = prior.stats_template(CellType::Normal, 2);
    // Parent, edge 0: s = (3, 4), h = (0.5, 0.5) -> H = h/0.5 = (1, 1)
    //   C = 1/(1/1 + 1) = 1/2 for both cells
    //   omega = sqrt(1/(1+1) + 1/(1+1)) = sqrt(1) = 1
    //   gamma0 = ||(3,4)|| / 1 = 5
    set_two_cells(&mut st, P0, (3.0, 4.0), (0.5, 0.5));
    // Parent, edge 1: s = (0.6, 0.8), h = (1.5, 0) -> H = (3, 0)
    //   C = (1/(1+3), 1/(1+0)) = (1/4, 1)
    //   omega = sqrt(3/(1+3) + 0) = sqrt(3)/2
    //   gamma0 = 1 / (sqrt(3)/2) = 2/sqrt(3)
    set_two_cells(&mut st, P1, (0.6, 0.8), (1.5, 0.0));
    // Child edge 0 op 0: s = (1, 1), h = (0.75, 0.75) -> H = h/0.25 = (3, 3)
    //   C = (1/4, 1/4); omega = sqrt(3/4 + 3/4) = sqrt(3/2)
    //   gamma_k = sqrt(2) / sqrt(3/2) = 2/sqrt(3)
    //   gamma_tilde = 1/(sqrt(3)/2 + 1/5)
    set_two_cells(&mut st, C00, (1.0, 1.0), (0.75, 0.75));
    // Child edge 0 op 1: s = (0, 0) -> dead: gamma_k = 0, gamma_tilde = 0
    //   h = (0.25, 0.5) -> H = (1, 2); C = (1/2, 1/3); omega = sqrt(1/2 + 2/3) = sqrt(7/6)
    set_two_cells(&mut st, C01, (0.0, 0.0), (0.25, 0.5));
    // Child edge 1 op 0: s = (2, 0), h = (0.25, 0.25) -> H = (1, 1)
    //   omega = 1, gamma_k = 2, gamma_tilde = 1/(1/2 + sqrt(3)/2) = 2/(1 + sqrt(3))
    set_two_cells(&mut st, C10, (2.0, 0.0), (0.25, 0.25));
    // Child edge 1 op 1: s = (0.5, 0.5), h = (0, 0) -> omega = 0: no curvature,
    //   gamma_k stays 1, C = (1, 1), gamma_tilde = 1/(1 + sqrt(3)/2) = 2/(2 + sqrt(3))
    set_two_cells(&mut st, C11, (0.5, 0.5), (0.0, 0.0));

    let reduce = prior.stats_template(CellType::Reduce, 0);
    let cfg = UpdateConfig {
        lambda_parent: 0.5,
        lambda_child: 0.25,
        negative_curvature: NegativeCurvature::Reject,
    };
    let summary = prior.update(&st, &reduce, &cfg).unwrap();
    assert_eq!(
        summary,
        UpdateSummary {
            updated: 4,
            dead: 1,
            no_curvature: 1,
            clamped: 0,
            skipped_cell_types: 1
        }
    );
    let s3 = 3f64.sqrt();
    let cell = prior.cell(CellType::Normal);
    let e0 = &cell.edges[0];
    let e1 = &cell.edges[1];

    assert_close!(e0.parent.gamma, 5.0);
    assert_close!(e0.parent.omega, 1.0);
    assert_close!(e0.parent.cells[0].big_h, 1.0);
    assert_close!(e0.parent.cells[1].c, 0.5);
    assert_eq!(e0.parent.cells[1].s, 4.0);

    assert_close!(e1.parent.gamma, 2.0 / s3);
    assert_close!(e1.parent.omega, s3 / 2.0);
    assert_close!(e1.parent.cells[0].c, 0.25);
    assert_close!(e1.parent.cells[1].c, 1.0);

    let c00 = &e0.children[0];
    assert_close!(c00.group.omega, 1.5f64.sqrt());
    assert_close!(c00.group.gamma, 2.0 / s3);
    assert_close!(c00.gamma_tilde, 1.0 / (s3 / 2.0 + 0.2));
    assert_close!(c00.group.cells[0].big_h, 3.0);
    assert_close!(c00.group.cells[1].c, 0.25);

    let c01 = &e0.children[1];
    assert_eq!(c01.group.status, GroupStatus::Dead);
    assert_eq!(c01.group.gamma, 0.0);
    assert_eq!(c01.gamma_tilde, 0.0);
    assert_close!(c01.group.omega, (7.0f64 / 6.0).sqrt());
    assert_close!(c01.group.cells[1].c, 1.0 / 3.0);

    let c10 = &e1.children[0];
    assert_close!(c10.group.gamma, 2.0);
    assert_close!(c10.gamma_tilde, 2.0 / (1.0 + s3));

    let c11 = &e1.children[1];
    assert_eq!(c11.group.status, GroupStatus::NoCurvature);
    assert_eq!(c11.group.gamma, 1.0);
    assert_eq!(c11.group.omega, 0.0);
    assert_close!(c11.gamma_tilde, 2.0 / (2.0 + s3));
    assert_close!(c11.group.cells[0].c, 1.0);

    // Reduce cells had no cells: untouched.
    let r = prior.cell(CellType::Reduce);
    assert_eq!(r.edges[0].parent.status, GroupStatus::Initial);
    assert_eq!(r.edges[0].children[0].gamma_tilde, 1.0);

    // The penalty uses the new omegas.
    assert_close!(
        prior
            .omega_for_penalty(GroupId {
                cell_type: CellType::Normal,
                kind: P1
            })
            .unwrap(),
        s3 / 2.0
    );
    assert_eq!(prior.rounds(), 1);
}

/// Each cell contributes its own term. The authors' loop evaluates every cell's term with
/// the last cell's quantities; with one gamma per group that amounts to
/// `n_cells * H_last / (1 + gamma H_last)`. Here H = (3, 1, 0) with gamma = 1:
/// correct omega^2 = 3/4 + 1/2 + 0 = 5/4; last-cell-only would give 3 * 0 = 0.
#[test]
fn omega_uses_each_cells_own_term() {
    let up = update_rejecting(1.0, &[1.0, 1.0, 1.0], &[3.0, 1.0, 0.0], 1.0).unwrap();
    assert_close!(up.omega, 1.25f64.sqrt());
    assert_close!(up.gamma.unwrap(), 3f64.sqrt() / 1.25f64.sqrt());
    let last_cell_only = (3.0f64 * 0.0).sqrt();
    assert!((up.omega - last_cell_only).abs() > 0.5);
    // And with a non-unit gamma (gamma = 2): terms 3/7, 1/3, 0.
    let up = update_rejecting(2.0, &[1.0, 0.0, 0.0], &[3.0, 1.0, 0.0], 1.0).unwrap();
    assert_close!(up.omega, (3.0f64 / 7.0 + 1.0 / 3.0).sqrt());
    assert_close!(up.cells[0].c, 1.0 / (0.5 + 3.0));
}

#[test]
fn parent_collapse_zeroes_all_children() {
    let space = tiny_space();
    let mut prior = Prior::new(&space).unwrap();
    let mut st = prior.stats_template(CellType::Normal, 2);
    for g in 0..st.n_groups() {
        let kind = GroupKind::from_index(g, 2);
        for c in 0..2 {
            // Parent of edge 0 has zero switches: dead.
            let s = if kind == P0 { 0.0 } else { 0.7 };
            st.set(kind, c, s, 0.3).unwrap();
        }
    }
    let red = prior.stats_template(CellType::Reduce, 0);
    prior.update(&st, &red, &UpdateConfig::new(0.01)).unwrap();
    let cell = prior.cell(CellType::Normal);
    assert_eq!(cell.edges[0].parent.gamma, 0.0);
    for c in &cell.edges[0].children {
        assert!(c.group.gamma > 0.0);
        assert_eq!(c.gamma_tilde, 0.0);
    }
    for c in &cell.edges[1].children {
        assert!(c.gamma_tilde > 0.0);
    }
    // A second round from a dead parent stays finite (C = 0, omega term = H).
    prior.update(&st, &red, &UpdateConfig::new(0.01)).unwrap();
    let cell = prior.cell(CellType::Normal);
    assert_eq!(cell.edges[0].parent.cells[0].c, 0.0);
    assert_eq!(cell.edges[0].children[1].gamma_tilde, 0.0);
}

#[test]
fn edge_cases_stay_finite() {
    // Zero curvature everywhere: gamma kept, omega 0.
    let up = update_rejecting(0.3, &[1.0, 2.0], &[0.0, 0.0], 0.01).unwrap();
    assert_eq!(up.status, GroupStatus::NoCurvature);
    assert_eq!(up.gamma, None);
    assert_eq!(up.omega, 0.0);
    // Zero switches and zero curvature: dead wins over no curvature.
    let up = update_rejecting(0.3, &[0.0, 0.0], &[0.0, 0.0], 0.01).unwrap();
    assert_eq!(up.status, GroupStatus::Dead);
    assert_eq!(up.gamma, Some(0.0));
    // Prior gamma 0.
    let up = update_rejecting(0.0, &[1.0], &[2.0], 1.0).unwrap();
    assert_eq!(up.cells[0].c, 0.0);
    assert_close!(up.omega, 2f64.sqrt());
    // Huge and tiny values.
    let up = update_rejecting(1e300, &[1e200, 1e200], &[1e-300, 1e300], 1e-3).unwrap();
    assert!(up.omega.is_finite());
    assert!(up.gamma.is_none_or(f64::is_finite));
    for c in &up.cells {
        assert!(c.c.is_finite() && c.big_h.is_finite());
    }
    // Empty group (no cells): dead, finite.
    let up = update_rejecting(1.0, &[], &[], 1.0).unwrap();
    assert_eq!(up.status, GroupStatus::Dead);
    // Bad inputs are errors, not panics.
    assert!(update_rejecting(1.0, &[f64::NAN], &[1.0], 1.0).is_err());
    assert!(update_rejecting(1.0, &[1.0], &[f64::INFINITY], 1.0).is_err());
    assert!(update_rejecting(1.0, &[1.0], &[1.0], 0.0).is_err());
    assert!(update_rejecting(1.0, &[1.0], &[1.0, 2.0], 1.0).is_err());
    assert!(matches!(
        update_rejecting(1.0, &[1.0], &[-1e-9], 1.0),
        Err(BayesError::NegativeCurvature { .. })
    ));
    let up = update_group(1.0, &[1.0], &[-1e-9], 1.0, NegativeCurvature::ClampToZero).unwrap();
    assert_eq!(up.clamped, 1);
    assert_eq!(up.status, GroupStatus::NoCurvature);
}

#[test]
fn failed_update_leaves_prior_unchanged() {
    let space = SearchSpace::bayesnas();
    let mut prior = Prior::new(&space).unwrap();
    let before = prior.clone();
    let mut n = prior.stats_template(CellType::Normal, 6);
    let r = prior.stats_template(CellType::Reduce, 2);
    n.set(GroupKind::Child { edge: 7, op: 6 }, 5, 1.0, f64::NAN)
        .unwrap();
    let err = prior.update(&n, &r, &UpdateConfig::new(0.005)).unwrap_err();
    assert!(err.to_string().contains("edge 7 op skip_connect"), "{err}");
    assert_eq!(prior, before);
    // Wrong shape.
    let wrong = CellTypeStats::zeros(14, 7, 6);
    assert!(matches!(
        prior.update(&wrong, &r, &UpdateConfig::new(0.005)),
        Err(BayesError::Shape { .. })
    ));
    assert!(prior
        .update(&r.clone(), &r, &UpdateConfig::new(-1.0))
        .is_err());
    // Unknown group.
    assert!(prior
        .omega_for_penalty(GroupId {
            cell_type: CellType::Reduce,
            kind: GroupKind::Child { edge: 8, op: 0 }
        })
        .is_err());
    assert!(n
        .set(GroupKind::Child { edge: 0, op: 7 }, 0, 1.0, 1.0)
        .is_err());
    assert!(n.set(GroupKind::Parent { edge: 0 }, 6, 1.0, 1.0).is_err());
}

#[test]
fn initial_prior_and_penalty() {
    let space = SearchSpace::bayesnas();
    let prior = Prior::new(&space).unwrap();
    assert!(prior.omegas(CellType::Normal).iter().all(|&w| w == 1.0));
    assert!(prior
        .gammas_in_force(CellType::Reduce)
        .iter()
        .all(|&g| g == 1.0));
    assert_eq!(prior.omegas(CellType::Normal).len(), 8 * 8);
    let mut n = prior.stats_template(CellType::Normal, 2);
    let r = prior.stats_template(CellType::Reduce, 1);
    // ||(3,4)|| = 5 on one parent group and 1 on a child: 0.1*5 + 0.2*1 = 0.7.
    n.set(GroupKind::Parent { edge: 2 }, 0, 3.0, 0.0).unwrap();
    n.set(GroupKind::Parent { edge: 2 }, 1, 4.0, 0.0).unwrap();
    n.set(GroupKind::Child { edge: 3, op: 1 }, 1, -1.0, 0.0)
        .unwrap();
    assert_close!(prior.penalty(&n, &r, 0.1, 0.2).unwrap(), 0.7);
}

#[test]
fn prior_serde_round_trip() {
    let prior = Prior::new(&SearchSpace::darts()).unwrap();
    let json = serde_json::to_string(&prior).unwrap();
    let back: Prior = serde_json::from_str(&json).unwrap();
    assert_eq!(back, prior);
    back.validate().unwrap();
}
