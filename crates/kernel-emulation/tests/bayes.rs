//! The host-emulated `group_ard_update` kernel against `bayesnas_search::Prior::update` (the
//! closed-form HARD update through the engine's host function `bayesnas_engine::ard`) on
//! random statistics, over several rounds.

use bayesnas_engine::ard::{group_ard_update, ArdInput, ArdOutput};
use bayesnas_engine::Rng;
use bayesnas_kernel_emulation::*;
use bayesnas_search::bayes::{GroupStatus, NegativeCurvature};
use bayesnas_search::BayesError;
use bayesnas_search::{CellType, CellTypeStats, Prior, SearchSpace, UpdateConfig};

/// Status, gamma_tilde (parents: gamma0) in the flat layout.
fn status_tilde(prior: &Prior, ct: CellType) -> (Vec<GroupStatus>, Vec<f64>) {
    let mut st = Vec::new();
    let mut ti = Vec::new();
    for ep in &prior.cell(ct).edges {
        st.push(ep.parent.status);
        ti.push(ep.parent.gamma);
        for c in &ep.children {
            st.push(c.group.status);
            ti.push(c.gamma_tilde);
        }
    }
    (st, ti)
}

fn code(s: GroupStatus) -> i32 {
    match s {
        GroupStatus::Updated => ARD_UPDATED,
        GroupStatus::Dead => ARD_DEAD,
        GroupStatus::NoCurvature => ARD_NO_CURVATURE,
        GroupStatus::Initial => 0,
    }
}

#[track_caller]
fn close(what: &str, got: &[f64], want: &[f64]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-12 * w.abs().max(1e-300),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

/// Per-cell C of every group in the flat `[group][cell]` layout.
fn cell_cs(prior: &Prior, ct: CellType) -> Vec<f64> {
    prior
        .cell(ct)
        .edges
        .iter()
        .flat_map(|ep| std::iter::once(&ep.parent).chain(ep.children.iter().map(|c| &c.group)))
        .flat_map(|g| g.cells.iter().map(|c| c.c))
        .collect()
}

/// The emulated kernel on `st` against the state of `prior` (what `Prior::update_with` passes).
fn run_kernel(prior: &Prior, ct: CellType, st: &CellTypeStats, cfg: &UpdateConfig) -> ArdOutput {
    let (gin, gprev) = (prior.gammas_in_force(ct), prior.own_gammas(ct));
    emulated(&ArdInput {
        n_parents: st.n_edges(),
        n_children: st.n_ops(),
        n_members: st.n_cells(),
        w: st.s_flat(),
        h: st.h_flat(),
        gamma_in: &gin,
        gamma_prev: &gprev,
        lambda_parent: cfg.lambda_parent,
        lambda_child: cfg.lambda_child,
        clamp_negative: cfg.negative_curvature == NegativeCurvature::ClampToZero,
    })
    .unwrap()
}

fn random_stats(
    prior: &Prior,
    ct: CellType,
    cells: usize,
    rng: &mut Rng,
    neg: bool,
) -> CellTypeStats {
    let t = prior.stats_template(ct, cells);
    let (ne, no) = (t.n_edges(), t.n_ops());
    let g = t.n_groups();
    let mut s = Vec::with_capacity(g * cells);
    let mut h = Vec::with_capacity(g * cells);
    for gi in 0..g {
        // A few special groups: all-zero switches (dead), zero curvature (no evidence).
        let dead = gi % 7 == 3;
        let flat = gi % 11 == 5;
        for _ in 0..cells {
            s.push(if dead { 0.0 } else { rng.normal() * 0.7 + 0.05 });
            let mut hv = if flat {
                0.0
            } else {
                rng.uniform_range(1e-4, 2.0)
            };
            if neg && rng.below(13) == 0 {
                hv = -hv;
            }
            h.push(hv);
        }
    }
    CellTypeStats::from_flat(ne, no, cells, s, h).unwrap()
}

/// Random prior strengths; negative curvatures are clamped to zero when `clamp`, else
/// rejected.
fn random_config(rng: &mut Rng, clamp: bool) -> UpdateConfig {
    UpdateConfig {
        lambda_parent: rng.uniform_range(0.01, 2.0),
        lambda_child: rng.uniform_range(0.01, 2.0),
        negative_curvature: if clamp {
            NegativeCurvature::ClampToZero
        } else {
            NegativeCurvature::Reject
        },
    }
}

#[test]
fn group_ard_update_matches_prior_update_over_rounds() {
    let mut rng = Rng::new(11);
    for space in [SearchSpace::darts(), SearchSpace::bayesnas()] {
        let mut prior = Prior::new(&space).unwrap();
        for round in 0..4 {
            let clamp = round >= 2;
            let cfg = random_config(&mut rng, clamp);
            let normal = random_stats(&prior, CellType::Normal, 3 + round, &mut rng, clamp);
            let reduce = random_stats(&prior, CellType::Reduce, 2, &mut rng, clamp);
            let outs = [
                run_kernel(&prior, CellType::Normal, &normal, &cfg),
                run_kernel(&prior, CellType::Reduce, &reduce, &cfg),
            ];
            let summary = prior.update(&normal, &reduce, &cfg).unwrap();
            let mut clamped = 0;
            for (ct, o) in [CellType::Normal, CellType::Reduce].into_iter().zip(&outs) {
                let what = format!("{} round {round} {ct:?}", space.name);
                close(&format!("{what} gamma"), &o.gamma, &prior.own_gammas(ct));
                close(&format!("{what} omega"), &o.omega, &prior.omegas(ct));
                let (st, ti) = status_tilde(&prior, ct);
                close(&format!("{what} tilde"), &o.tilde, &ti);
                let cs = cell_cs(&prior, ct);
                assert_eq!(cs.len(), o.c.len(), "{what} C count");
                close(&format!("{what} C"), &o.c, &cs);
                let want: Vec<i32> = st.into_iter().map(code).collect();
                assert_eq!(o.status, want, "{what} status");
                clamped += o.clamped.iter().sum::<i32>() as usize;
            }
            assert_eq!(clamped, summary.clamped, "round {round} clamped");
            assert!(summary.dead > 0 && summary.no_curvature > 0 && summary.updated > 0);
        }
    }
}

#[test]
fn group_ard_update_reports_errors() {
    let mut rng = Rng::new(12);
    let space = SearchSpace::darts();
    let prior = Prior::new(&space).unwrap();
    let cfg = UpdateConfig::new(0.5);
    let mut st = random_stats(&prior, CellType::Normal, 2, &mut rng, false);
    let (ne, no, nc) = (st.n_edges(), st.n_ops(), st.n_cells());
    let (mut s, mut h) = (st.s_flat().to_vec(), st.h_flat().to_vec());
    h[3] = -0.5; // group 1 (first child of edge 0), cell 1
    s[(no + 1) * nc] = f64::NAN; // parent of edge 1
    st = CellTypeStats::from_flat(ne, no, nc, s, h).unwrap();
    let mut p2 = prior.clone();
    assert!(p2
        .update(&st, &prior.stats_template(CellType::Reduce, 0), &cfg)
        .is_err());
    let o = run_kernel(&prior, CellType::Normal, &st, &cfg);
    assert_eq!(o.status[1], ARD_ERR_NEGATIVE);
    assert_eq!(o.status[no + 1], ARD_ERR_NOT_FINITE);
    assert_eq!(o.status[0], ARD_UPDATED);
}

/// The host-emulated kernel behind `Prior::update_with`'s kernel seam (as
/// `CudaBackend::group_ard_update` is on a GPU).
fn emulated(inp: &ArdInput<'_>) -> Result<ArdOutput, BayesError> {
    let g = inp.n_parents * (inp.n_children + 1);
    let mut o = ArdOutput {
        gamma: vec![f64::NAN; g],
        omega: vec![f64::NAN; g],
        tilde: vec![f64::NAN; g],
        status: vec![99; g],
        clamped: vec![99; g],
        c: vec![f64::NAN; g * inp.n_members],
    };
    unsafe {
        host_group_ard_update(
            Launch::d1(2, 4),
            inp.w.as_ptr(),
            inp.h.as_ptr(),
            inp.gamma_in.as_ptr(),
            inp.gamma_prev.as_ptr(),
            o.gamma.as_mut_ptr(),
            o.omega.as_mut_ptr(),
            o.tilde.as_mut_ptr(),
            o.status.as_mut_ptr(),
            o.clamped.as_mut_ptr(),
            o.c.as_mut_ptr(),
            inp.params(),
        )
    };
    Ok(o)
}

/// `Prior::update_with` (the search's device path: layout, status codes, commit) driven by the
/// emulated kernel leaves the prior exactly where `Prior::update` does, over several rounds,
/// and rejects bad statistics with the host's error, leaving the prior unchanged.
#[test]
fn update_with_the_emulated_kernel_matches_update() {
    let mut rng = Rng::new(13);
    for space in [SearchSpace::darts(), SearchSpace::bayesnas()] {
        let (mut host, mut dev) = (Prior::new(&space).unwrap(), Prior::new(&space).unwrap());
        for round in 0..5 {
            let clamp = round >= 2;
            let cfg = random_config(&mut rng, clamp);
            let n = random_stats(&host, CellType::Normal, 2 + round, &mut rng, clamp);
            // Round 4 has no reduction cells (skipped cell type).
            let r = random_stats(
                &host,
                CellType::Reduce,
                if round == 4 { 0 } else { 2 },
                &mut rng,
                clamp,
            );
            let sh = host.update(&n, &r, &cfg).unwrap();
            let sd = dev.update_with(&n, &r, &cfg, &mut emulated).unwrap();
            assert_eq!(sd, sh, "{} round {round}: summary", space.name);
            for ct in [CellType::Normal, CellType::Reduce] {
                let what = format!("{} round {round} {ct:?}", space.name);
                close(
                    &format!("{what} gamma"),
                    &dev.own_gammas(ct),
                    &host.own_gammas(ct),
                );
                close(&format!("{what} omega"), &dev.omegas(ct), &host.omegas(ct));
                let (std, tid) = status_tilde(&dev, ct);
                let (sth, tih) = status_tilde(&host, ct);
                assert_eq!(std, sth, "{what} status");
                close(&format!("{what} tilde"), &tid, &tih);
                close(
                    &format!("{what} C"),
                    &cell_cs(&dev, ct),
                    &cell_cs(&host, ct),
                );
                for (ed, eh) in dev.cell(ct).edges.iter().zip(&host.cell(ct).edges) {
                    for (a, b) in std::iter::once((&ed.parent, &eh.parent)).chain(
                        ed.children
                            .iter()
                            .map(|c| &c.group)
                            .zip(eh.children.iter().map(|c| &c.group)),
                    ) {
                        assert_eq!(a.cells.len(), b.cells.len(), "{what} cells");
                        for (x, y) in a.cells.iter().zip(&b.cells) {
                            assert_eq!((x.s, x.h), (y.s, y.h), "{what} cell s, h");
                            close(&format!("{what} H"), &[x.big_h], &[y.big_h]);
                        }
                    }
                }
                assert_eq!(dev.cell(ct).n_cells, host.cell(ct).n_cells);
            }
            assert_eq!(dev.rounds(), host.rounds());
        }
        let mut h = random_stats(&host, CellType::Normal, 2, &mut rng, false)
            .h_flat()
            .to_vec();
        h[5] = -1.0;
        let t = host.stats_template(CellType::Normal, 2);
        let bad =
            CellTypeStats::from_flat(t.n_edges(), t.n_ops(), 2, vec![0.3; h.len()], h).unwrap();
        let empty = host.stats_template(CellType::Reduce, 0);
        let cfg = UpdateConfig::new(0.5);
        let before = dev.clone();
        let eh = host.clone().update(&bad, &empty, &cfg).unwrap_err();
        let ed = dev
            .update_with(&bad, &empty, &cfg, &mut emulated)
            .unwrap_err();
        assert_eq!(ed.to_string(), eh.to_string());
        assert_eq!(dev, before);
    }
}

/// The emulated kernel and the engine's host function `ard::group_ard_update` agree bit for
/// bit on every output (for C: on every group without an error status), errors included.
#[test]
fn emulated_kernel_equals_the_host_function_bit_for_bit() {
    let mut rng = Rng::new(14);
    for space in [SearchSpace::darts(), SearchSpace::bayesnas()] {
        let prior = Prior::new(&space).unwrap();
        for round in 0..6 {
            let clamp = round % 2 == 1;
            let mut st = random_stats(&prior, CellType::Normal, 1 + round, &mut rng, true);
            let (ne, no, nc) = (st.n_edges(), st.n_ops(), st.n_cells());
            let (mut s, mut h) = (st.s_flat().to_vec(), st.h_flat().to_vec());
            let k = rng.below(h.len());
            h[k] = -0.5;
            if round >= 4 {
                let (i, j) = (rng.below(s.len()), rng.below(h.len()));
                s[i] = f64::NAN;
                h[j] = f64::INFINITY;
            }
            st = CellTypeStats::from_flat(ne, no, nc, s, h).unwrap();
            let g = st.n_groups();
            let gamma_in: Vec<f64> = (0..g)
                .map(|i| match i % 9 {
                    0 => 0.0,
                    1 if round == 5 => -1.0,
                    _ => rng.uniform_range(0.0, 3.0),
                })
                .collect();
            let gamma_prev: Vec<f64> = (0..g).map(|_| rng.uniform_range(0.0, 3.0)).collect();
            let inp = ArdInput {
                n_parents: st.n_edges(),
                n_children: st.n_ops(),
                n_members: st.n_cells(),
                w: st.s_flat(),
                h: st.h_flat(),
                gamma_in: &gamma_in,
                gamma_prev: &gamma_prev,
                lambda_parent: rng.uniform_range(0.01, 2.0),
                lambda_child: rng.uniform_range(0.01, 2.0),
                clamp_negative: clamp,
            };
            let (dev, host) = (emulated(&inp).unwrap(), group_ard_update(&inp));
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let what = format!("{} round {round}", space.name);
            assert_eq!(dev.status, host.status, "{what} status");
            assert_eq!(dev.clamped, host.clamped, "{what} clamped");
            assert_eq!(bits(&dev.gamma), bits(&host.gamma), "{what} gamma");
            assert_eq!(bits(&dev.omega), bits(&host.omega), "{what} omega");
            assert_eq!(bits(&dev.tilde), bits(&host.tilde), "{what} tilde");
            let nm = inp.n_members;
            for (gi, &s) in host.status.iter().enumerate() {
                let r = gi * nm..(gi + 1) * nm;
                if s > 0 {
                    assert_eq!(bits(&dev.c[r.clone()]), bits(&host.c[r]), "{what} C");
                }
            }
            if round < 4 && !clamp {
                assert!(host.status.contains(&ARD_ERR_NEGATIVE), "{what}");
            }
            if round >= 4 {
                assert!(host.status.contains(&ARD_ERR_NOT_FINITE), "{what}");
            }
            if round == 5 {
                assert!(host.status.contains(&ARD_ERR_BAD_GAMMA), "{what}");
            }
            assert!(host.status.contains(&ARD_UPDATED), "{what}");
        }
    }
}
