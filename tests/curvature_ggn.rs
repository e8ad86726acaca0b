//! The curvature recursion on a tiny two-cell supernet against the exact generalised
//! Gauss-Newton diagonal for every switch, computed from f64 finite-difference Jacobians of an
//! independent naive f64 implementation of the same network.
//!
//! The recursion keeps only the diagonal of each activation's curvature, so it is an
//! approximation of the GGN; the test asserts what must hold (both non-negative, finite) and
//! prints the rank correlation. It also asserts a positive rank correlation: a recursion that
//! is unrelated to the true curvature fails it.

mod common;

use bayesnas_engine::prelude::*;
use common::naive::{self, T};
use common::{randn, round32, tensor};

const B: usize = 3;
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

fn naive_logits(x: &T, w: &Weights, sw: &[f64]) -> Vec<f64> {
    let edge = |e: usize, outs: [&T; K]| -> T {
        let s = &sw[e * (K + 1)..e * (K + 1) + K];
        let s0 = sw[e * (K + 1) + K];
        let coef: Vec<f64> = s.iter().map(|v| v * s0).collect();
        naive::weighted_sum(&outs, &coef)
    };
    let conv_bn = |x: &T,
                   wt: &[f64],
                   co: usize,
                   k: usize,
                   stride: usize,
                   pad: usize,
                   dil: usize,
                   groups: usize| {
        naive::batch_norm(
            &naive::conv2d(&naive::relu(x), wt, co, k, stride, pad, dil, groups),
            EPS,
        )
    };
    let a0 = naive::batch_norm(&naive::conv2d(x, &w.stem, C, 3, 1, 1, 1, 1), EPS);
    // cell A (normal)
    let n0 = edge(
        0,
        [
            &conv_bn(&a0, &w.a_conv_n0, C, 3, 1, 1, 1, 1),
            &naive::max_pool(&a0, 3, 1, 1),
            &a0,
        ],
    );
    let dw = naive::conv2d(&naive::relu(&a0), &w.a_dw_n1, C, 3, 1, 2, 2, C);
    let dil = naive::batch_norm(&naive::conv2d(&dw, &w.a_pw_n1, C, 1, 1, 0, 1, 1), EPS);
    let e1 = edge(1, [&dil, &naive::avg_pool(&a0, 3, 1, 1), &a0]);
    let e2 = edge(
        2,
        [
            &conv_bn(&n0, &w.a_conv_n01, C, 3, 1, 1, 1, 1),
            &naive::max_pool(&n0, 3, 1, 1),
            &n0,
        ],
    );
    let n1 = naive::weighted_sum(&[&e1, &e2], &[1.0, 1.0]);
    let a_out = naive::concat(&[&n0, &n1]);
    // cell B (reduction)
    let b_in = conv_bn(&a_out, &w.b_pre, C, 1, 1, 0, 1, 1);
    let m0 = edge(
        3,
        [
            &conv_bn(&b_in, &w.b_conv_n0, C, 3, 2, 1, 1, 1),
            &naive::max_pool(&b_in, 3, 2, 1),
            &naive::avg_pool(&b_in, 3, 2, 1),
        ],
    );
    let m1 = edge(
        4,
        [
            &conv_bn(&m0, &w.b_conv_n01, C, 3, 1, 1, 1, 1),
            &m0,
            &naive::avg_pool(&m0, 3, 1, 1),
        ],
    );
    let b_out = naive::concat(&[&m0, &m1]);
    let pooled = naive::global_avg_pool(&b_out);
    naive::linear(&pooled, &w.fc_w, &w.fc_b, B, 2 * C, CLASSES)
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
    let pool = |stride| Pool2dSpec {
        kernel: 3,
        stride,
        padding: 1,
    };
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

fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].partial_cmp(&v[b]).unwrap());
    let mut r = vec![0.0; v.len()];
    for (rank, &i) in idx.iter().enumerate() {
        r[i] = rank as f64;
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

#[test]
fn recursion_vs_exact_ggn_on_two_cell_net() {
    let mut rng = Rng::new(2024);
    let mut r = |n: usize, scale: f64| -> Vec<f64> {
        round32(
            &randn(n, &mut rng)
                .iter()
                .map(|v| v * scale)
                .collect::<Vec<_>>(),
        )
    };
    let w = Weights {
        stem: r(C * CIN * 9, (2.0 / (CIN * 9) as f64).sqrt()),
        a_conv_n0: r(C * C * 9, (2.0 / (C * 9) as f64).sqrt()),
        a_dw_n1: r(C * 9, (2.0 / 9.0f64).sqrt()),
        a_pw_n1: r(C * C, (2.0 / C as f64).sqrt()),
        a_conv_n01: r(C * C * 9, (2.0 / (C * 9) as f64).sqrt()),
        b_pre: r(C * 2 * C, (2.0 / (2 * C) as f64).sqrt()),
        b_conv_n0: r(C * C * 9, (2.0 / (C * 9) as f64).sqrt()),
        b_conv_n01: r(C * C * 9, (2.0 / (C * 9) as f64).sqrt()),
        fc_w: r(CLASSES * 2 * C, (1.0 / (2 * C) as f64).sqrt()),
        fc_b: r(CLASSES, 0.1),
    };
    let x = T::new(B, CIN, HW, HW, r(B * CIN * HW * HW, 1.0));
    let mut srng = Rng::new(77);
    let sw: Vec<f64> = round32(&common::rand_uniform(EDGES * (K + 1), 0.5, 1.5, &mut srng));
    let labels = [1u32, 4, 0];

    let (h_rec, logits_engine) = engine_switch_curvature(&x, &w, &sw, &labels);
    let logits = naive_logits(&x, &w, &sw);
    common::assert_close(
        "two-cell logits (engine vs naive f64)",
        &logits_engine.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        &logits,
        1e-4,
    );

    // Exact GGN diagonal: sum_n J_n^T (diag(p_n) - p_n p_n^T) / B J_n.
    let e = 1e-5;
    let mut ggn = Vec::new();
    for i in 0..sw.len() {
        let mut sp = sw.clone();
        sp[i] += e;
        let mut sm = sw.clone();
        sm[i] -= e;
        let (lp, lm) = (naive_logits(&x, &w, &sp), naive_logits(&x, &w, &sm));
        let mut g = 0.0;
        for n in 0..B {
            let p = softmax(&logits[n * CLASSES..(n + 1) * CLASSES]);
            let j: Vec<f64> = (0..CLASSES)
                .map(|c| (lp[n * CLASSES + c] - lm[n * CLASSES + c]) / (2.0 * e))
                .collect();
            let pj: f64 = p.iter().zip(&j).map(|(a, b)| a * b).sum();
            g += p.iter().zip(&j).map(|(pi, ji)| pi * ji * ji).sum::<f64>() - pj * pj;
        }
        ggn.push(g / B as f64);
    }
    for (i, (&a, &b)) in h_rec.iter().zip(&ggn).enumerate() {
        assert!(a.is_finite() && a >= 0.0, "recursion h[{i}] = {a}");
        assert!(b.is_finite() && b >= -1e-9, "GGN[{i}] = {b}");
    }
    let rho = pearson(&ranks(&h_rec), &ranks(&ggn));
    println!("switch | recursion h | exact GGN");
    for (i, (a, b)) in h_rec.iter().zip(&ggn).enumerate() {
        println!(
            "{:>2} e{} {} | {:.4e} | {:.4e}",
            i,
            i / (K + 1),
            if i % (K + 1) == K { "parent" } else { "child " },
            a,
            b
        );
    }
    println!(
        "Spearman rank correlation (recursion vs exact GGN) over {} switches: {rho:.3}",
        sw.len()
    );
    assert!(
        rho > 0.0,
        "recursion is not positively rank-correlated with the exact GGN: {rho}"
    );
}
