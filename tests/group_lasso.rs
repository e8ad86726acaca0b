//! `Backend::group_lasso_grad` on the CPU backend (the reference the CUDA kernel is tested
//! against) checked independently: against a naive f64 recomputation from the definition
//! (`penalty = sum_g coef_g ||v_g||`, `grad += coef_g v / ||v_g||`, nothing for a zero norm),
//! that formula against central finite differences of the penalty in f64, and every invalid
//! group description an error (with a message naming the problem), never a panic.

mod common;

use bayesnas_engine::device::LassoGroups;
use bayesnas_engine::prelude::*;
use bayesnas_engine::Backend;
use common::*;

fn cpu() -> &'static dyn Backend {
    Device::Cpu.backend().unwrap()
}

/// Random f32 values (never zero) of the given sizes.
fn values(sizes: &[usize], rng: &mut Rng) -> Vec<Vec<f32>> {
    sizes
        .iter()
        .map(|&n| randn(n, rng).iter().map(|&v| v as f32).collect())
        .collect()
}

/// The definition, naively in f64: the penalty and its gradient (zero outside the groups and
/// for a group of norm 0).
fn naive(vals: &[Vec<f64>], g: &LassoGroups) -> (f64, Vec<Vec<f64>>) {
    let mut penalty = 0.0;
    let mut grad: Vec<Vec<f64>> = vals.iter().map(|v| vec![0.0; v.len()]).collect();
    for (i, &coef) in g.coef.iter().enumerate() {
        let members: Vec<(usize, usize)> = (g.start[i]..g.start[i + 1])
            .map(|m| (g.tensor[m], g.elem[m]))
            .collect();
        let norm = members
            .iter()
            .map(|&(t, e)| vals[t][e] * vals[t][e])
            .sum::<f64>()
            .sqrt();
        penalty += coef * norm;
        if norm > 0.0 {
            for &(t, e) in &members {
                grad[t][e] = coef * vals[t][e] / norm;
            }
        }
    }
    (penalty, grad)
}

fn to_f64(v: &[Vec<f32>]) -> Vec<Vec<f64>> {
    v.iter()
        .map(|x| x.iter().map(|&y| y as f64).collect())
        .collect()
}

/// The CPU backend's group_lasso_grad on tensors of the given sizes (1-D) from the starting
/// gradients `grads0`: the updated gradients and the penalty.
fn run_cpu(
    vals: &[Vec<f32>],
    grads0: &[Vec<f32>],
    g: &LassoGroups,
) -> Result<(Vec<Vec<f32>>, f32)> {
    let vt: Vec<Tensor> = vals
        .iter()
        .map(|v| Tensor::from_vec(v.clone(), &[v.len()]).unwrap())
        .collect();
    let mut gt: Vec<Tensor> = grads0
        .iter()
        .map(|v| Tensor::from_vec(v.clone(), &[v.len()]).unwrap())
        .collect();
    let vr: Vec<&Tensor> = vt.iter().collect();
    let mut gr: Vec<&mut Tensor> = gt.iter_mut().collect();
    let pen = cpu().group_lasso_grad(&vr, &mut gr, g)?;
    Ok((gt.iter().map(|t| t.to_vec()).collect(), pen.item()?))
}

#[test]
fn cpu_matches_the_definition() {
    let mut rng = Rng::new(1);
    for (sizes, n_groups, max_size) in [
        (vec![7usize, 15, 1, 24, 40], 12usize, 5usize),
        (vec![1000, 153], 300, 3),
        (vec![3], 1, 2),
        (vec![576, 5], 40, 9),
    ] {
        let what = format!("sizes {sizes:?} groups {n_groups}");
        let mut vals = values(&sizes, &mut rng);
        let grads0 = values(&sizes, &mut rng);
        let g = random_groups(&sizes, n_groups, max_size, n_groups > 1, &mut rng);
        // One group whose members are all zero (norm 0: no gradient, no penalty), if there
        // is a non-empty group besides the first.
        let zero = (1..g.len()).find(|&i| g.start[i + 1] > g.start[i]);
        if let Some(z) = zero {
            for m in g.start[z]..g.start[z + 1] {
                vals[g.tensor[m]][g.elem[m]] = 0.0;
            }
        }
        let (grads, penalty) = run_cpu(&vals, &grads0, &g).unwrap();
        let (want_pen, dpen) = naive(&to_f64(&vals), &g);
        let eps = f32::EPSILON as f64;
        assert!(
            (penalty as f64 - want_pen).abs() <= eps * want_pen,
            "{what}: penalty {penalty} vs {want_pen}"
        );
        let mut in_group: Vec<Vec<bool>> = sizes.iter().map(|&n| vec![false; n]).collect();
        for (&t, &e) in g.tensor.iter().zip(&g.elem) {
            in_group[t][e] = true;
        }
        for t in 0..sizes.len() {
            for e in 0..sizes[t] {
                let (got, g0, d) = (grads[t][e] as f64, grads0[t][e] as f64, dpen[t][e]);
                if !in_group[t][e] || d == 0.0 {
                    // outside every group, or in the zero group: untouched
                    assert_eq!(
                        grads[t][e].to_bits(),
                        grads0[t][e].to_bits(),
                        "{what}: ({t}, {e}) changed"
                    );
                    continue;
                }
                // g0 + (f32)d rounded to f32: two roundings of at most half an ulp each.
                let tol = 1.5 * eps * (g0.abs() + d.abs());
                assert!(
                    (got - (g0 + d)).abs() <= tol,
                    "{what}: ({t}, {e}) got {got}, want {} (g0 {g0}, d {d})",
                    g0 + d
                );
            }
        }
        if let Some(z) = zero {
            for m in g.start[z]..g.start[z + 1] {
                assert_eq!(dpen[g.tensor[m]][g.elem[m]], 0.0);
            }
        }
    }
}

#[test]
fn penalty_gradient_by_finite_differences() {
    let mut rng = Rng::new(2);
    for (sizes, n_groups, max_size) in [(vec![9usize, 4, 13], 6usize, 4usize), (vec![50], 10, 3)] {
        let what = format!("sizes {sizes:?}");
        let g = random_groups(&sizes, n_groups, max_size, true, &mut rng);
        // f64 values on an f32 grid (the CPU backend sees the same numbers); no zero norms.
        let vals32 = values(&sizes, &mut rng);
        let vals = to_f64(&vals32);
        let flat: Vec<f64> = vals.iter().flatten().copied().collect();
        let unflat = |x: &[f64]| -> Vec<Vec<f64>> {
            let mut off = 0;
            sizes
                .iter()
                .map(|&n| {
                    off += n;
                    x[off - n..off].to_vec()
                })
                .collect()
        };
        let penalty = |x: &[f64]| naive(&unflat(x), &g).0;
        let fd = fd_grad(&penalty, &flat, 1e-6);
        let formula: Vec<f64> = naive(&vals, &g).1.into_iter().flatten().collect();
        let scale = formula.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(scale > 0.0);
        for (i, (a, b)) in fd.iter().zip(&formula).enumerate() {
            assert!(
                (a - b).abs() <= 1e-7 * scale,
                "{what}: element {i}: finite differences {a} vs formula {b}"
            );
        }
        // and the CPU backend's gradient (from zero: just the penalty's gradient) against
        // the finite differences
        let zeros: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
        let (grads, pen) = run_cpu(&vals32, &zeros, &g).unwrap();
        let got: Vec<f32> = grads.into_iter().flatten().collect();
        assert_close(&format!("{what}: cpu gradient vs fd"), &got, &fd, 1e-6);
        assert_close(
            &format!("{what}: cpu penalty"),
            &[pen],
            &[penalty(&flat)],
            1e-6,
        );
    }
}

#[test]
fn empty_groups_and_no_groups_are_accepted() {
    let vals = vec![vec![3.0f32, 4.0], vec![1.0]];
    let grads0 = vec![vec![1.0f32, 2.0], vec![5.0]];
    // group 0 empty, group 1 = {v0[0], v0[1]} (norm 5), group 2 empty
    let g = LassoGroups {
        start: vec![0, 0, 2, 2],
        tensor: vec![0, 0],
        elem: vec![0, 1],
        coef: vec![7.0, 0.5, 3.0],
    };
    let (grads, pen) = run_cpu(&vals, &grads0, &g).unwrap();
    assert_eq!(pen, 2.5);
    // 1 + 0.5 * 3 / 5 and 2 + 0.5 * 4 / 5 (the increments rounded to f32, then added)
    assert_eq!(grads, vec![vec![1.0 + 0.3f32, 2.0 + 0.4f32], vec![5.0]]);
    let none = LassoGroups {
        start: vec![0],
        ..Default::default()
    };
    let (grads, pen) = run_cpu(&vals, &grads0, &none).unwrap();
    assert_eq!(pen, 0.0);
    assert_eq!(grads, grads0);
    let (grads, pen) = run_cpu(&[], &[], &none).unwrap();
    assert_eq!((grads.len(), pen), (0, 0.0));
}

#[test]
fn invalid_groups_are_errors_not_panics() {
    let vals = vec![vec![1.0f32, 2.0, 3.0], vec![4.0, 5.0]];
    let grads0 = vec![vec![0.5f32; 3], vec![0.25; 2]];
    let ok = LassoGroups {
        start: vec![0, 2, 3],
        tensor: vec![0, 1, 0],
        elem: vec![0, 1, 2],
        coef: vec![1.0, 2.0],
    };
    run_cpu(&vals, &grads0, &ok).unwrap();
    let with = |f: &dyn Fn(&mut LassoGroups)| {
        let mut g = ok.clone();
        f(&mut g);
        g
    };
    let cases: Vec<(&str, LassoGroups, &str)> = vec![
        (
            "member in two groups",
            with(&|g| g.elem[2] = 0),
            "(tensor 0, element 0) in two groups",
        ),
        (
            "member twice in one group",
            with(&|g| {
                g.tensor[1] = 0;
                g.elem[1] = 0;
            }),
            "(tensor 0, element 0) in two groups",
        ),
        (
            "tensor index out of range",
            with(&|g| g.tensor[1] = 2),
            "(tensor 2, element 1) out of range",
        ),
        (
            "element index out of range",
            with(&|g| g.elem[1] = 2),
            "(tensor 1, element 2) out of range",
        ),
        (
            "offsets not starting at 0",
            with(&|g| g.start = vec![1, 2, 3]),
            "group offsets [1, 2, 3]",
        ),
        (
            "decreasing offsets",
            with(&|g| {
                g.start = vec![0, 2, 1, 3];
                g.coef = vec![1.0, 2.0, 3.0];
            }),
            "group offsets [0, 2, 1, 3]",
        ),
        (
            "offsets not ending at the member count",
            with(&|g| g.start = vec![0, 1, 2]),
            "do not run from 0 to the 3 members",
        ),
        (
            "one offset too many",
            with(&|g| g.start = vec![0, 1, 2, 3]),
            "4 group offsets for 2 groups",
        ),
        (
            "no offsets",
            with(&|g| g.start = vec![]),
            "0 group offsets for 2 groups",
        ),
        (
            "no offsets and no groups",
            LassoGroups::default(),
            "0 group offsets for 0 groups",
        ),
        (
            "tensor and element lists of different lengths",
            with(&|g| {
                g.elem.pop();
            }),
            "3 member tensors but 2 elements",
        ),
    ];
    for (what, g, needle) in &cases {
        let res = std::panic::catch_unwind(|| run_cpu(&vals, &grads0, g));
        let res = res.unwrap_or_else(|_| panic!("{what}: panicked"));
        let msg = match res {
            Ok(_) => panic!("{what}: accepted {g:?}"),
            Err(e) => e.to_string(),
        };
        assert!(msg.contains("group_lasso_grad"), "{what}: {msg}");
        assert!(msg.contains(needle), "{what}: {msg:?} lacks {needle:?}");
    }
    // values / gradients that do not pair up
    let vt: Vec<Tensor> = vals
        .iter()
        .map(|v| Tensor::from_vec(v.clone(), &[v.len()]).unwrap())
        .collect();
    let vr: Vec<&Tensor> = vt.iter().collect();
    let mut one = Tensor::from_vec(grads0[0].clone(), &[3]).unwrap();
    let before = one.to_vec();
    let err = cpu()
        .group_lasso_grad(&vr, &mut [&mut one], &ok)
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 values but 1 gradients"), "{err}");
    assert_eq!(one.to_vec(), before, "a rejected call wrote a gradient");
    let mut a = Tensor::from_vec(grads0[0].clone(), &[3]).unwrap();
    let mut b = Tensor::from_vec(vec![0.0; 3], &[3]).unwrap();
    let err = cpu()
        .group_lasso_grad(&vr, &mut [&mut a, &mut b], &ok)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("group_lasso_grad gradient") && err.contains("[2]") && err.contains("[3]"),
        "{err}"
    );
    assert_eq!(a.to_vec(), before, "a rejected call wrote a gradient");
}
