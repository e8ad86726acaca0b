//! The curvature recursion on a tiny two-cell supernet against the exact generalised
//! Gauss-Newton diagonal for every switch, G_s = (1/B) sum_n J_n^T (diag(p_n) - p_n p_n^T) J_n,
//! with J_n = d logits_n / d s from f64 central finite differences of an independent naive f64
//! implementation of the same network.
//!
//! Two oracles:
//! - live BN: the naive network's batch norm recomputes its batch statistics under the
//!   perturbation (the true train-mode network);
//! - frozen BN: every batch norm uses the mean/var of the unperturbed forward pass, i.e. it is
//!   the fixed per-channel affine map the recursion assumes (method notes, section 6).
//!   The only approximation left between the recursion and this oracle is the diagonal one
//!   (dropped off-diagonal curvature terms, including -p_i p_j of the softmax).
//!
//! The recursion is an approximation of both, so the test asserts exactness only where it must
//! hold (non-negative, finite, engine logits = naive logits) and asserts measured floors on
//! Spearman rank correlations, separately for the parent switches (one per edge) and for the
//! child switches within each edge (the per-edge ranking of candidate ops, which is what the
//! search uses). The pooled figure over all switches is printed only: the scale gap between
//! parents and children inflates it. `planted_bugs_break_the_floors` checks that corrupting the
//! recursion's output (swapped or rescaled children, permuted or rescaled parents) breaks them.
//!
//! Measured (40 seeds, B = 8): against live BN the parents rank at mean rho 0.35 and the
//! children within an edge at 0.51; against frozen BN at 0.74 and 0.73. So the BN-statistics
//! error dominates for the parents and for edge 0; what remains against frozen BN is the
//! diagonal error, largest where a global average pool follows (edge 4: the recursion sums
//! z^2 over positions where the GGN has (sum z)^2, and it orders skip vs avg pool opposite to
//! the GGN in 32 of 40 seeds).

mod common;

use std::cell::RefCell;

use bayesnas_engine::prelude::*;
use common::naive::{self, T};
use common::{pool_spec, randn, round32, tensor};

const B: usize = 8;
const CIN: usize = 2;
const HW: usize = 6;
const C: usize = 4;
const CLASSES: usize = 5;
const K: usize = 3;
const EPS: f64 = 1e-5;

struct Weights {
    stem: Vec<f64>,
    a_conv_n0: Vec<f64>,
    a_dw_n1: Vec<f64>,
    a_pw_n1: Vec<f64>,
    a_conv_n01: Vec<f64>,
    b_pre: Vec<f64>,
    b_conv_n0: Vec<f64>,
    b_conv_n01: Vec<f64>,
    fc_w: Vec<f64>,
    fc_b: Vec<f64>,
}

/// Switches: 5 edges, each [s_1..s_K, s0] (the last one is the parent).
const EDGES: usize = 5;

/// Per-channel `(mean, var)` of one batch norm.
type BnStats = (Vec<f64>, Vec<f64>);

/// How the naive network's batch norms get their statistics.
enum Bn<'a> {
    /// Recomputed from the batch on every forward pass (train mode, the true network).
    Live,
    /// Taken, in forward order, from another pass (the unperturbed one): a fixed affine map.
    Frozen(&'a [BnStats]),
}

/// The naive f64 network: logits `[B, CLASSES]` and the statistics each batch norm used, in
/// forward order.
fn naive_logits(x: &T, w: &Weights, sw: &[f64], bn: &Bn) -> (Vec<f64>, Vec<BnStats>) {
    let used: RefCell<Vec<BnStats>> = RefCell::new(Vec::new());
    let bnf = |y: &T| -> T {
        let mut used = used.borrow_mut();
        match bn {
            Bn::Live => {
                used.push(naive::batch_norm_stats(y));
                naive::batch_norm(y, EPS)
            }
            Bn::Frozen(stats) => {
                let (mean, var) = &stats[used.len()];
                used.push((mean.clone(), var.clone()));
                naive::batch_norm_fixed(y, mean, var, EPS)
            }
        }
    };
    let edge = |e: usize, outs: [&T; K]| -> T {
        let s = &sw[e * (K + 1)..e * (K + 1) + K];
        let s0 = sw[e * (K + 1) + K];
        let coef: Vec<f64> = s.iter().map(|v| v * s0).collect();
        naive::weighted_sum(&outs, &coef)
    };
    let conv_bn = |x: &T, wt: &[f64], k: usize, stride: usize| {
        bnf(&naive::conv2d(
            &naive::relu(x),
            wt,
            C,
            k,
            stride,
            k / 2,
            1,
            1,
        ))
    };
    let a0 = bnf(&naive::conv2d(x, &w.stem, C, 3, 1, 1, 1, 1));
    // cell A (normal)
    let n0 = edge(
        0,
        [
            &conv_bn(&a0, &w.a_conv_n0, 3, 1),
            &naive::max_pool(&a0, 3, 1, 1),
            &a0,
        ],
    );
    let dw = naive::conv2d(&naive::relu(&a0), &w.a_dw_n1, C, 3, 1, 2, 2, C);
    let dil = bnf(&naive::conv2d(&dw, &w.a_pw_n1, C, 1, 1, 0, 1, 1));
    let e1 = edge(1, [&dil, &naive::avg_pool(&a0, 3, 1, 1), &a0]);
    let e2 = edge(
        2,
        [
            &conv_bn(&n0, &w.a_conv_n01, 3, 1),
            &naive::max_pool(&n0, 3, 1, 1),
            &n0,
        ],
    );
    let n1 = naive::weighted_sum(&[&e1, &e2], &[1.0, 1.0]);
    let a_out = naive::concat(&[&n0, &n1]);
    // cell B (reduction)
    let b_in = conv_bn(&a_out, &w.b_pre, 1, 1);
    let m0 = edge(
        3,
        [
            &conv_bn(&b_in, &w.b_conv_n0, 3, 2),
            &naive::max_pool(&b_in, 3, 2, 1),
            &naive::avg_pool(&b_in, 3, 2, 1),
        ],
    );
    let m1 = edge(
        4,
        [
            &conv_bn(&m0, &w.b_conv_n01, 3, 1),
            &m0,
            &naive::avg_pool(&m0, 3, 1, 1),
        ],
    );
    let b_out = naive::concat(&[&m0, &m1]);
    let pooled = naive::global_avg_pool(&b_out);
    let logits = naive::linear(&pooled, &w.fc_w, &w.fc_b, B, 2 * C, CLASSES);
    (logits, used.into_inner())
}

fn engine_switch_curvature(x: &T, w: &Weights, sw: &[f64], labels: &[u32]) -> (Vec<f64>, Vec<f64>) {
    let mut store = ParamStore::new();
    let mut p = |name: &str, v: &[f64], shape: &[usize]| {
        store.add(name, "weights", tensor(v, shape)).unwrap()
    };
    let stem = p("stem", &w.stem, &[C, CIN, 3, 3]);
    let a_conv_n0 = p("a_conv_n0", &w.a_conv_n0, &[C, C, 3, 3]);
    let a_dw_n1 = p("a_dw_n1", &w.a_dw_n1, &[C, 1, 3, 3]);
    let a_pw_n1 = p("a_pw_n1", &w.a_pw_n1, &[C, C, 1, 1]);
    let a_conv_n01 = p("a_conv_n01", &w.a_conv_n01, &[C, C, 3, 3]);
    let b_pre = p("b_pre", &w.b_pre, &[C, 2 * C, 1, 1]);
    let b_conv_n0 = p("b_conv_n0", &w.b_conv_n0, &[C, C, 3, 3]);
    let b_conv_n01 = p("b_conv_n01", &w.b_conv_n01, &[C, C, 3, 3]);
    let fc_w = p("fc_w", &w.fc_w, &[CLASSES, 2 * C]);
    let fc_b = p("fc_b", &w.fc_b, &[CLASSES]);
    let mut sids = Vec::new();
    for e in 0..EDGES {
        let s = store
            .add(
                &format!("s{e}"),
                "switches",
                tensor(&sw[e * (K + 1)..e * (K + 1) + K], &[K]),
            )
            .unwrap();
        let s0 = store
            .add(
                &format!("s0_{e}"),
                "switches",
                tensor(&sw[e * (K + 1) + K..e * (K + 1) + K + 1], &[1]),
            )
            .unwrap();
        sids.push((s, s0));
    }
    let mut tape = Tape::new();
    let t = &mut tape;
    let xv = t.input(tensor(&x.d, &[B, CIN, HW, HW]));
    let pool = |stride| pool_spec(3, stride, 1);
    let conv = |t: &mut Tape, x: Var, id: ParamId, spec: Conv2dSpec| {
        let wv = t.param(&store, id);
        t.conv2d(x, wv, spec).unwrap()
    };
    let bn = |t: &mut Tape, x: Var| t.batch_norm(x, None, None, None, 0.1, EPS as f32).unwrap();
    let conv_bn = |t: &mut Tape, x: Var, id: ParamId, spec: Conv2dSpec| {
        let r = t.relu(x).unwrap();
        let c = conv(t, r, id, spec);
        bn(t, c)
    };
    let edge = |t: &mut Tape, e: usize, outs: [Var; K]| {
        let (s, s0) = sids[e];
        let (sv, s0v) = (t.param(&store, s), t.param(&store, s0));
        t.mixed(&outs, sv, s0v).unwrap()
    };
    let c3 = Conv2dSpec::new().padding(1);
    let stem_c = conv(t, xv, stem, c3);
    let a0 = bn(t, stem_c);
    let o1 = conv_bn(t, a0, a_conv_n0, c3);
    let o2 = t.max_pool2d(a0, pool(1)).unwrap();
    let n0 = edge(t, 0, [o1, o2, a0]);
    let r = t.relu(a0).unwrap();
    let dw = conv(
        t,
        r,
        a_dw_n1,
        Conv2dSpec::new().padding(2).dilation(2).groups(C),
    );
    let pw = conv(t, dw, a_pw_n1, Conv2dSpec::new());
    let dil = bn(t, pw);
    let ap = t.avg_pool2d(a0, pool(1)).unwrap();
    let e1 = edge(t, 1, [dil, ap, a0]);
    let o1 = conv_bn(t, n0, a_conv_n01, c3);
    let o2 = t.max_pool2d(n0, pool(1)).unwrap();
    let e2 = edge(t, 2, [o1, o2, n0]);
    let n1 = t.sum(&[e1, e2]).unwrap();
    let a_out = t.concat_channels(&[n0, n1]).unwrap();
    let b_in = conv_bn(t, a_out, b_pre, Conv2dSpec::new());
    let o1 = conv_bn(t, b_in, b_conv_n0, c3.stride(2));
    let o2 = t.max_pool2d(b_in, pool(2)).unwrap();
    let o3 = t.avg_pool2d(b_in, pool(2)).unwrap();
    let m0 = edge(t, 3, [o1, o2, o3]);
    let o1 = conv_bn(t, m0, b_conv_n01, c3);
    let o3 = t.avg_pool2d(m0, pool(1)).unwrap();
    let m1 = edge(t, 4, [o1, m0, o3]);
    let b_out = t.concat_channels(&[m0, m1]).unwrap();
    let pooled = t.global_avg_pool(b_out).unwrap();
    let (fw, fb) = (t.param(&store, fc_w), t.param(&store, fc_b));
    let logits = t.linear(pooled, fw, Some(fb)).unwrap();
    let loss = t.cross_entropy(logits, labels).unwrap();
    let h = tape.curvature_backward(loss).unwrap();
    let mut out = Vec::new();
    for &(s, s0) in &sids {
        out.extend(h.param(s).unwrap().to_vec().iter().map(|&v| v as f64));
        out.push(h.param(s0).unwrap().to_vec()[0] as f64);
    }
    (
        out,
        tape.value(logits)
            .to_vec()
            .iter()
            .map(|&v| v as f64)
            .collect(),
    )
}

/// One random problem: weights, inputs, switches and labels all drawn from `seed`.
struct Case {
    w: Weights,
    x: T,
    sw: Vec<f64>,
    labels: Vec<u32>,
}

fn scaled_randn(n: usize, scale: f64, rng: &mut Rng) -> Vec<f64> {
    round32(&randn(n, rng).iter().map(|v| v * scale).collect::<Vec<_>>())
}

fn make_case(seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let he = |fan_in: usize| (2.0 / fan_in as f64).sqrt();
    let w = Weights {
        stem: scaled_randn(C * CIN * 9, he(CIN * 9), &mut rng),
        a_conv_n0: scaled_randn(C * C * 9, he(C * 9), &mut rng),
        a_dw_n1: scaled_randn(C * 9, he(9), &mut rng),
        a_pw_n1: scaled_randn(C * C, he(C), &mut rng),
        a_conv_n01: scaled_randn(C * C * 9, he(C * 9), &mut rng),
        b_pre: scaled_randn(C * 2 * C, he(2 * C), &mut rng),
        b_conv_n0: scaled_randn(C * C * 9, he(C * 9), &mut rng),
        b_conv_n01: scaled_randn(C * C * 9, he(C * 9), &mut rng),
        fc_w: scaled_randn(CLASSES * 2 * C, (1.0 / (2 * C) as f64).sqrt(), &mut rng),
        fc_b: scaled_randn(CLASSES, 0.1, &mut rng),
    };
    let x = T::new(
        B,
        CIN,
        HW,
        HW,
        scaled_randn(B * CIN * HW * HW, 1.0, &mut rng),
    );
    let sw = round32(&common::rand_uniform(EDGES * (K + 1), 0.5, 1.5, &mut rng));
    let labels = (0..B).map(|_| rng.below(CLASSES) as u32).collect();
    Case { w, x, sw, labels }
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Exact GGN diagonal of the mean cross-entropy w.r.t. every switch:
/// (1/B) sum_n J_n^T (diag(p_n) - p_n p_n^T) J_n, J_n by f64 central differences.
fn exact_ggn(case: &Case, bn: &Bn, logits: &[f64]) -> Vec<f64> {
    let e = 1e-5;
    let probs: Vec<Vec<f64>> = (0..B)
        .map(|n| softmax(&logits[n * CLASSES..(n + 1) * CLASSES]))
        .collect();
    (0..case.sw.len())
        .map(|i| {
            let mut sp = case.sw.clone();
            sp[i] += e;
            let mut sm = case.sw.clone();
            sm[i] -= e;
            let lp = naive_logits(&case.x, &case.w, &sp, bn).0;
            let lm = naive_logits(&case.x, &case.w, &sm, bn).0;
            let mut g = 0.0;
            for (n, p) in probs.iter().enumerate() {
                let j: Vec<f64> = (0..CLASSES)
                    .map(|c| (lp[n * CLASSES + c] - lm[n * CLASSES + c]) / (2.0 * e))
                    .collect();
                let pj: f64 = p.iter().zip(&j).map(|(a, b)| a * b).sum();
                g += p.iter().zip(&j).map(|(pi, ji)| pi * ji * ji).sum::<f64>() - pj * pj;
            }
            g / B as f64
        })
        .collect()
}

/// Ranks with ties averaged.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].partial_cmp(&v[b]).unwrap());
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            r[k] = (i + j) as f64 / 2.0;
        }
        i = j + 1;
    }
    r
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&ranks(a), &ranks(b))
}

/// Rank correlations of the recursion against one oracle.
#[derive(Clone, Copy, Debug)]
struct Rho {
    /// All 5 * (K + 1) switches pooled (printed only: parent/child scale gap inflates it).
    pooled: f64,
    /// The EDGES parent switches s0.
    parents: f64,
    /// Per edge, over its K child switches: mean and minimum over the edges.
    child_mean: f64,
    child_min: f64,
    /// Edges whose children are ranked with positive correlation.
    child_pos: usize,
    /// The per-edge child rank correlations.
    per_edge: [f64; EDGES],
}

fn rho(h: &[f64], g: &[f64]) -> Rho {
    let parent = |v: &[f64]| -> Vec<f64> { (0..EDGES).map(|e| v[e * (K + 1) + K]).collect() };
    let per_edge: Vec<f64> = (0..EDGES)
        .map(|e| {
            let r = e * (K + 1)..e * (K + 1) + K;
            spearman(&h[r.clone()], &g[r])
        })
        .collect();
    Rho {
        pooled: spearman(h, g),
        parents: spearman(&parent(h), &parent(g)),
        child_mean: per_edge.iter().sum::<f64>() / EDGES as f64,
        child_min: per_edge.iter().cloned().fold(f64::INFINITY, f64::min),
        child_pos: per_edge.iter().filter(|&&r| r > 0.0).count(),
        per_edge: per_edge.clone().try_into().unwrap(),
    }
}

/// The recursion and both oracles for one seed, after the exactness checks.
struct Measured {
    seed: u64,
    h: Vec<f64>,
    ggn_live: Vec<f64>,
    ggn_frozen: Vec<f64>,
}

fn measure(seed: u64) -> Measured {
    let case = make_case(seed);
    let (h, logits_engine) = engine_switch_curvature(&case.x, &case.w, &case.sw, &case.labels);
    let (logits, stats) = naive_logits(&case.x, &case.w, &case.sw, &Bn::Live);
    common::assert_close(
        &format!("seed {seed}: two-cell logits (engine vs naive f64)"),
        &logits_engine.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        &logits,
        1e-4,
    );
    // Replaying the unperturbed statistics must reproduce the live forward pass.
    let (logits_frozen, _) = naive_logits(&case.x, &case.w, &case.sw, &Bn::Frozen(&stats));
    common::assert_close(
        &format!("seed {seed}: frozen-BN replay of the unperturbed pass"),
        &logits_frozen.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        &logits,
        1e-6,
    );
    let ggn_live = exact_ggn(&case, &Bn::Live, &logits);
    let ggn_frozen = exact_ggn(&case, &Bn::Frozen(&stats), &logits);
    // No batch norm lies downstream of edge 4 (m1 -> concat -> global pool -> linear), so there
    // the two oracles must agree: a check of the frozen-BN oracle itself.
    for i in 4 * (K + 1)..5 * (K + 1) {
        let (l, f) = (ggn_live[i], ggn_frozen[i]);
        assert!(
            (l - f).abs() <= 1e-6 * l.abs().max(f.abs()) + 1e-12,
            "seed {seed}: edge-4 switch {i}: live GGN {l} != frozen GGN {f}"
        );
    }
    for i in 0..h.len() {
        let (a, l, f) = (h[i], ggn_live[i], ggn_frozen[i]);
        assert!(
            a.is_finite() && a >= 0.0,
            "seed {seed}: recursion h[{i}] = {a}"
        );
        assert!(
            l.is_finite() && l >= -1e-9,
            "seed {seed}: live GGN[{i}] = {l}"
        );
        assert!(
            f.is_finite() && f >= -1e-9,
            "seed {seed}: frozen GGN[{i}] = {f}"
        );
    }
    Measured {
        seed,
        h,
        ggn_live,
        ggn_frozen,
    }
}

const N_SEEDS: u64 = 40;

/// The measurements for seeds 0..N_SEEDS, shared by both tests (computed once).
fn measured() -> &'static [Measured] {
    static M: std::sync::OnceLock<Vec<Measured>> = std::sync::OnceLock::new();
    M.get_or_init(|| (0..N_SEEDS).map(measure).collect())
}

/// Floors on the rank correlations, set somewhat below the values measured with
/// `N_SEEDS` = 40, B = 8, 6x6 (the figures in the comments; run with --nocapture for the
/// table). Per-seed Spearman over 5 parents or 3 children is coarse (steps of 0.1 and 0.5), so
/// the tight floors are on the means over the 40 seeds; one rank flip moves a per-edge mean by
/// at most 2/40 and the overall child mean by at most 2/200. The per-seed child-min (over the
/// edges) is printed only: it reaches -1 for both oracles.
struct Floors {
    /// Per seed: parents rho, mean over the edges of the per-edge child rho.
    parents: f64,
    child_mean: f64,
    /// Means over the seeds of the per-seed figures.
    mean_parents: f64,
    mean_child_mean: f64,
    /// Fraction of the 200 (seed, edge) pairs whose children rank with rho > 0.
    frac_child_pos: f64,
    /// Per edge: mean over the seeds of that edge's child rho.
    edge_child: [f64; EDGES],
}

/// Recursion vs GGN with live (train-mode) BN: BN-statistics error plus diagonal error.
const LIVE: Floors = Floors {
    parents: -0.7,                          // measured min over seeds -0.500
    child_mean: 0.0,                        // measured min 0.100
    mean_parents: 0.25,                     // measured 0.345
    mean_child_mean: 0.45,                  // measured 0.508
    frac_child_pos: 0.82,                   // measured 174/200 = 0.870
    edge_child: [0.05, 0.5, 0.5, 0.6, 0.3], // measured [0.163 0.625 0.600 0.725 0.425]
};

/// Recursion vs GGN with frozen BN: the diagonal error only, much closer.
const FROZEN: Floors = Floors {
    parents: -0.2,                         // measured min over seeds 0.000
    child_mean: 0.3,                       // measured min 0.400
    mean_parents: 0.65,                    // measured 0.735
    mean_child_mean: 0.70,                 // measured 0.733
    frac_child_pos: 0.95,                  // measured 196/200 = 0.980
    edge_child: [0.7, 0.6, 0.9, 0.6, 0.3], // measured [0.825 0.725 0.975 0.713 0.425]
};

fn row(label: &str, l: &Rho, f: &Rho) -> String {
    let cells = |r: &Rho| {
        format!(
            "{:>6.3} {:>7.3} {:>10.3} {:>9.3} {:>5}",
            r.pooled, r.parents, r.child_mean, r.child_min, r.child_pos
        )
    };
    format!("{label:>5} | {} | {}\n", cells(l), cells(f))
}

/// The table, and every floor the figures break. `plant` edits the recursion's output before
/// the comparison (identity for the real test; a planted bug for the negative control).
fn evaluate(ms: &[Measured], plant: &dyn Fn(u64, &mut [f64])) -> (String, Vec<String>) {
    let head = "pooled parents child-mean child-min ch>0";
    let mut table = format!(" seed | live BN: {head} | frozen BN: {head}\n");
    let mut bad = Vec::new();
    let mut check = |what: String, v: f64, floor: f64| {
        // NaN fails too
        if v.is_nan() || v < floor {
            bad.push(format!("{what} = {v:.3} < floor {floor}"));
        }
    };
    let mut all: [Vec<Rho>; 2] = [Vec::new(), Vec::new()];
    // Per oracle, edge and child pair (0,1) (0,2) (1,2): seeds where the recursion orders the
    // pair as the GGN does.
    const PAIRS: [(usize, usize); 3] = [(0, 1), (0, 2), (1, 2)];
    let mut concordant = [[[0usize; 3]; EDGES]; 2];
    for m in ms {
        let mut h = m.h.clone();
        plant(m.seed, &mut h);
        let (l, f) = (rho(&h, &m.ggn_live), rho(&h, &m.ggn_frozen));
        table += &row(&m.seed.to_string(), &l, &f);
        for (name, r, fl) in [("live", &l, &LIVE), ("frozen", &f, &FROZEN)] {
            check(
                format!("seed {} {name}: parents rho", m.seed),
                r.parents,
                fl.parents,
            );
            check(
                format!("seed {} {name}: child-mean rho", m.seed),
                r.child_mean,
                fl.child_mean,
            );
        }
        all[0].push(l);
        all[1].push(f);
        for (o, g) in [&m.ggn_live, &m.ggn_frozen].into_iter().enumerate() {
            for (e, per_edge) in concordant[o].iter_mut().enumerate() {
                for (p, &(a, b)) in PAIRS.iter().enumerate() {
                    let (a, b) = (e * (K + 1) + a, e * (K + 1) + b);
                    per_edge[p] += usize::from((h[a] - h[b]) * (g[a] - g[b]) > 0.0);
                }
            }
        }
    }
    let n = ms.len() as f64;
    let agg = |v: &[Rho], pick: fn(&Rho) -> f64, min: bool| {
        if min {
            v.iter().map(pick).fold(f64::INFINITY, f64::min)
        } else {
            v.iter().map(pick).sum::<f64>() / n
        }
    };
    let summary = |min: bool| -> [Rho; 2] {
        [0, 1].map(|i| Rho {
            pooled: agg(&all[i], |r| r.pooled, min),
            parents: agg(&all[i], |r| r.parents, min),
            child_mean: agg(&all[i], |r| r.child_mean, min),
            child_min: agg(&all[i], |r| r.child_min, min),
            per_edge: std::array::from_fn(|e| {
                let v = all[i].iter().map(|r| r.per_edge[e]);
                if min {
                    v.fold(f64::INFINITY, f64::min)
                } else {
                    v.sum::<f64>() / n
                }
            }),
            child_pos: if min {
                all[i].iter().map(|r| r.child_pos).min().unwrap()
            } else {
                all[i].iter().map(|r| r.child_pos).sum()
            },
        })
    };
    let [ml, mf] = summary(false);
    let [nl, nf] = summary(true);
    table += &row("mean", &ml, &mf);
    table += &row("min", &nl, &nf);
    let edges = n * EDGES as f64;
    let fmt = |r: &Rho| r.per_edge.map(|v| format!("{v:.3}")).join(" ");
    table += &format!(
        "per-edge child rho, mean over seeds: live [{}], frozen [{}]\n",
        fmt(&ml),
        fmt(&mf)
    );
    for (o, name) in ["live", "frozen"].iter().enumerate() {
        let cells: Vec<String> = concordant[o]
            .iter()
            .enumerate()
            .map(|(e, c)| format!("e{e} {} {} {}", c[0], c[1], c[2]))
            .collect();
        table += &format!(
            "child pairs (0,1) (0,2) (1,2) ordered as the GGN, of {n} seeds, {name:>6}: {}\n",
            cells.join(" | ")
        );
    }
    table += &format!(
        "(ch>0: edges whose {K} children rank with rho > 0, of {EDGES}; the mean row gives the \
         total of {edges})\n"
    );
    for (name, r, fl) in [("live", &ml, &LIVE), ("frozen", &mf, &FROZEN)] {
        check(
            format!("mean {name}: parents rho"),
            r.parents,
            fl.mean_parents,
        );
        check(
            format!("mean {name}: child-mean rho"),
            r.child_mean,
            fl.mean_child_mean,
        );
        check(
            format!("{name}: fraction of edges with child rho > 0"),
            r.child_pos as f64 / edges,
            fl.frac_child_pos,
        );
        for e in 0..EDGES {
            check(
                format!("mean {name}: edge {e} child rho"),
                r.per_edge[e],
                fl.edge_child[e],
            );
        }
    }
    (table, bad)
}

#[test]
fn recursion_vs_exact_ggn_on_two_cell_net() {
    let t0 = std::time::Instant::now();
    let ms = measured();
    let (table, bad) = evaluate(ms, &|_, _| {});
    println!(
        "Spearman rho, recursion vs exact GGN diagonal (B = {B}, {HW}x{HW}, {EDGES} edges x \
         {K} children + parent; child = per-edge rho over its {K} children)\n\
         children: e0 [conv3, max, skip] e1 [dil-conv, avg, skip] e2 [conv3, max, skip] \
         e3 [conv3/2, max/2, avg/2] e4 [conv3, skip, avg]\n{table}\
         ({} seeds in {:.2?})",
        N_SEEDS,
        t0.elapsed()
    );
    if std::env::var("BAYESNAS_GGN_VERBOSE").is_ok_and(|v| v == "1") {
        for m in ms {
            println!(
                "seed {}: switch | recursion h | GGN live BN | GGN frozen BN",
                m.seed
            );
            for i in 0..m.h.len() {
                println!(
                    "{:>2} e{} {} | {:.4e} | {:.4e} | {:.4e}",
                    i,
                    i / (K + 1),
                    if i % (K + 1) == K { "parent" } else { "child " },
                    m.h[i],
                    m.ggn_live[i],
                    m.ggn_frozen[i]
                );
            }
        }
    }
    assert!(
        bad.is_empty(),
        "rank-correlation floors broken:\n{}",
        bad.join("\n")
    );
}

/// Negative control: planted bugs in the recursion's output must break the floors.
///
/// Not every bug is detectable this way: the recursion orders some child pairs no better than
/// chance even against the frozen-BN oracle (e.g. edge 3, conv vs avg pool, 17/40 seeds; see
/// the "child pairs" line of the table), so swapping those two children's curvatures breaks no
/// floor and is not planted here.
#[test]
fn planted_bugs_break_the_floors() {
    let ms = measured();
    let at = |e: usize, k: usize| e * (K + 1) + k;
    let log_uniform = |rng: &mut Rng, f: f64| f.powf(rng.uniform_range(-1.0, 1.0));
    type Plant = Box<dyn Fn(u64, &mut [f64])>;
    let plants: Vec<(&str, Plant)> = vec![
        (
            "swap children 0 and 1 in every edge",
            Box::new(move |_, h: &mut [f64]| (0..EDGES).for_each(|e| h.swap(at(e, 0), at(e, 1)))),
        ),
        (
            "swap children 1 and 2 of edge 0",
            Box::new(move |_, h: &mut [f64]| h.swap(at(0, 1), at(0, 2))),
        ),
        (
            "avg-pool children x 9",
            Box::new(move |_, h: &mut [f64]| {
                for (e, k) in [(1, 1), (3, 2), (4, 2)] {
                    h[at(e, k)] *= 9.0;
                }
            }),
        ),
        (
            "one random child per seed x random factor in [1/30, 30]",
            Box::new(move |seed, h: &mut [f64]| {
                let mut rng = Rng::new(seed ^ 0x5eed);
                let i = at(rng.below(EDGES), rng.below(K));
                h[i] *= log_uniform(&mut rng, 30.0);
            }),
        ),
        (
            "every child x random factor in [1/10, 10]",
            Box::new(move |seed, h: &mut [f64]| {
                let mut rng = Rng::new(seed ^ 0xbad);
                for e in 0..EDGES {
                    for k in 0..K {
                        h[at(e, k)] *= log_uniform(&mut rng, 10.0);
                    }
                }
            }),
        ),
        (
            "parents in reverse edge order",
            Box::new(move |_, h: &mut [f64]| {
                let p: Vec<f64> = (0..EDGES).map(|e| h[at(e, K)]).collect();
                (0..EDGES).for_each(|e| h[at(e, K)] = p[EDGES - 1 - e]);
            }),
        ),
        (
            "parent curvature x s0-independent random factor in [1/10, 10]",
            Box::new(move |seed, h: &mut [f64]| {
                let mut rng = Rng::new(seed ^ 0xfee);
                (0..EDGES).for_each(|e| h[at(e, K)] *= log_uniform(&mut rng, 10.0));
            }),
        ),
    ];
    for (name, plant) in &plants {
        let (_, bad) = evaluate(ms, plant.as_ref());
        println!(
            "planted: {name}: {} floors broken, e.g. {:?}",
            bad.len(),
            bad.last()
        );
        assert!(!bad.is_empty(), "planted bug '{name}' breaks no floor");
    }
}
