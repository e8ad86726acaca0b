//! Helpers shared by the kernel-emulation tests: the CPU reference backend, random inputs
//! that are never zero, and the tolerance check against the reference.
#![allow(dead_code)]

use bayesnas_engine::device::cpu::CpuBackend;
use bayesnas_engine::device::{Backend, LassoGroups};
use bayesnas_engine::{Conv2dSpec, Rng, Tensor};
use bayesnas_kernel_emulation::*;

/// Threads per block of the host launches.
pub const B: u32 = 256;

pub fn cpu() -> &'static dyn Backend {
    &CpuBackend
}

/// Random normal values, none of them zero.
pub fn rvec(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v = rng.normal() as f32;
            if v.abs() < 1e-3 {
                0.5
            } else {
                v
            }
        })
        .collect()
}

pub fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

#[track_caller]
pub fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: reference is all zero (useless test)");
    let (mut worst, mut at) = (0.0f32, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        let d = if d.is_nan() { f32::INFINITY } else { d };
        if d > worst {
            worst = d;
            at = i;
        }
    }
    assert!(
        worst <= 1e-4 * scale,
        "{what}: max error {worst} at {at} (got {}, want {}), scale {scale}",
        got[at],
        want[at]
    );
}

#[track_caller]
pub fn close64(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol * want.abs().max(1e-300),
        "{what}: got {got}, want {want}"
    );
}

pub fn pick<T: Copy>(rng: &mut Rng, xs: &[T]) -> T {
    xs[rng.below(xs.len())]
}

/// Forward, backward (with finalize) and curvature (with finalize) of the mixed op.
pub fn check_mixed(n: usize, k: usize, inner: usize, chunks: i64, rng: &mut Rng, order: &str) {
    let what = format!("mixed n{n} k{k} inner{inner} chunks{chunks} ({order})");
    let shape = [n, inner];
    let xs: Vec<Vec<f32>> = (0..k).map(|_| rvec(n * inner, rng)).collect();
    let txs: Vec<Tensor> = xs.iter().map(|v| t(v, &shape)).collect();
    let refs: Vec<&Tensor> = txs.iter().collect();
    let (s0, s) = (rvec(1, rng), rvec(k, rng));
    let (ts0, ts) = (t(&s0, &[1]), t(&s, &[k]));
    let dy = rvec(n * inner, rng);
    let tdy = t(&dy, &shape);
    let ptrs: Vec<*const f32> = xs.iter().map(|v| v.as_ptr()).collect();
    let p = MixedParams {
        n: n as i64,
        inner: inner as i64,
        chunks,
        k: k as i32,
        ..Default::default()
    };
    let mut y = vec![f32::NAN; n * inner];
    unsafe {
        host_mixed_fwd(
            Launch::d1(3, B),
            ptrs.as_ptr(),
            s0.as_ptr(),
            s.as_ptr(),
            y.as_mut_ptr(),
            p,
        )
    };
    let want = cpu().mixed_forward(&refs, &ts0, &ts).unwrap();
    close(&format!("{what} fwd"), &y, want.cpu());
    let blocks = n * chunks as usize;
    let (wdx, wr) = cpu().mixed_backward(&refs, &tdy, &ts0, &ts).unwrap();
    let mut dxs: Vec<Vec<f32>> = (0..k).map(|_| vec![f32::NAN; n * inner]).collect();
    let dptrs: Vec<*mut f32> = dxs.iter_mut().map(|v| v.as_mut_ptr()).collect();
    let mut part = vec![f64::NAN; blocks * k];
    let mut r = vec![f32::NAN; n * k];
    unsafe {
        host_mixed_bwd(
            Launch::d1(blocks as u32, B),
            ptrs.as_ptr(),
            dy.as_ptr(),
            s0.as_ptr(),
            s.as_ptr(),
            dptrs.as_ptr(),
            part.as_mut_ptr(),
            p,
        );
        host_mixed_reduce_finalize(Launch::d1(2, B), part.as_ptr(), r.as_mut_ptr(), p);
    }
    for (j, (got, want)) in dxs.iter().zip(&wdx).enumerate() {
        close(&format!("{what} dx{j}"), got, want.cpu());
    }
    close(&format!("{what} r"), &r, wr.cpu());
    let (whx, whs, whs0) = cpu().mixed_curvature(&refs, &tdy, &ts0, &ts).unwrap();
    let mut hxs: Vec<Vec<f32>> = (0..k).map(|_| vec![f32::NAN; n * inner]).collect();
    let hptrs: Vec<*mut f32> = hxs.iter_mut().map(|v| v.as_mut_ptr()).collect();
    let mut part = vec![f64::NAN; blocks * (k + 1)];
    let (mut hs, mut hs0) = (vec![f32::NAN; k], vec![f32::NAN; 1]);
    unsafe {
        host_mixed_curv(
            Launch::d1(blocks as u32, B),
            ptrs.as_ptr(),
            dy.as_ptr(),
            s0.as_ptr(),
            s.as_ptr(),
            hptrs.as_ptr(),
            part.as_mut_ptr(),
            p,
        );
        host_mixed_curv_finalize(
            Launch::d1(1, B),
            part.as_ptr(),
            s0.as_ptr(),
            hs.as_mut_ptr(),
            hs0.as_mut_ptr(),
            p,
        );
    }
    for (j, (got, want)) in hxs.iter().zip(&whx).enumerate() {
        close(&format!("{what} hx{j}"), got, want.cpu());
    }
    close(&format!("{what} h_s"), &hs, whs.cpu());
    close(&format!("{what} h_s0"), &hs0, whs0.cpu());
}

/// The depthwise kernels' parameters for an `[n, c, h, w]` input, `k x k` filters and `spec`
/// (stride, padding, dilation); everything else (`splits`, `square_w`) at its default.
pub fn dw_params(n: usize, c: usize, h: usize, w: usize, k: usize, spec: Conv2dSpec) -> DwParams {
    DwParams {
        n: n as i64,
        c: c as i64,
        h: h as i64,
        w: w as i64,
        ho: spec.out_size(h, k) as i64,
        wo: spec.out_size(w, k) as i64,
        k: k as i32,
        stride: spec.stride as i32,
        padding: spec.padding as i32,
        dilation: spec.dilation as i32,
        ..Default::default()
    }
}

/// `bn_stats` on the host over `x` (`c` channels): (mean, var, invstd); outputs start as NaN,
/// so a value the kernel leaves unwritten fails the comparison.
pub fn bn_stats(l: Launch, x: &[f32], c: usize, p: BnParams) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut m, mut v, mut is) = (vec![f32::NAN; c], vec![f32::NAN; c], vec![f32::NAN; c]);
    unsafe {
        host_bn_stats(
            l,
            x.as_ptr(),
            m.as_mut_ptr(),
            v.as_mut_ptr(),
            is.as_mut_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            p,
        )
    };
    (m, v, is)
}

/// `bn_bwd_reduce` on the host: per channel, (sum of dy, sum of dy * x_hat); NaN-initialised.
pub fn bn_bwd_reduce(
    l: Launch,
    dy: &[f32],
    x: &[f32],
    mean: &[f32],
    invstd: &[f32],
    c: usize,
    p: BnParams,
) -> (Vec<f32>, Vec<f32>) {
    let (mut sd, mut sdx) = (vec![f32::NAN; c], vec![f32::NAN; c]);
    unsafe {
        host_bn_bwd_reduce(
            l,
            dy.as_ptr(),
            x.as_ptr(),
            mean.as_ptr(),
            invstd.as_ptr(),
            sd.as_mut_ptr(),
            sdx.as_mut_ptr(),
            p,
        )
    };
    (sd, sdx)
}

/// A random group-lasso problem (`Backend::group_lasso_grad`): tensors of the given shapes with
/// random values, random starting gradients (never zero) and groups of random sizes
/// `1..=max_size` over a random subset of the elements (some elements stay in no group).
/// Optionally one group is empty (`empty`) and one has members whose values are all zero
/// (`zero`, norm 0: its members' gradients must not change).
pub struct Lasso {
    pub shapes: Vec<Vec<usize>>,
    pub vals: Vec<Vec<f32>>,
    pub grads0: Vec<Vec<f32>>,
    pub groups: LassoGroups,
    pub empty: Option<usize>,
    pub zero: Option<usize>,
}

impl Lasso {
    pub fn random(
        shapes: &[&[usize]],
        n_groups: usize,
        max_size: usize,
        special: bool,
        rng: &mut Rng,
    ) -> Lasso {
        let shapes: Vec<Vec<usize>> = shapes.iter().map(|s| s.to_vec()).collect();
        let sizes: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
        // Values over several orders of magnitude, so that the f64 order of the sums matters.
        let mut vals: Vec<Vec<f32>> = sizes
            .iter()
            .map(|&n| {
                rvec(n, rng)
                    .iter()
                    .map(|v| v * 10f32.powi(rng.below(7) as i32 - 3))
                    .collect()
            })
            .collect();
        let grads0: Vec<Vec<f32>> = sizes.iter().map(|&n| rvec(n, rng)).collect();
        let mut all: Vec<(usize, usize)> = sizes
            .iter()
            .enumerate()
            .flat_map(|(t, &n)| (0..n).map(move |e| (t, e)))
            .collect();
        rng.shuffle(&mut all);
        let (empty, zero) = if special && n_groups >= 2 {
            let e = rng.below(n_groups);
            let z = (e + 1 + rng.below(n_groups - 1)) % n_groups;
            (Some(e), Some(z))
        } else {
            (None, None)
        };
        let mut groups = LassoGroups {
            start: vec![0],
            ..Default::default()
        };
        let mut next = 0;
        for g in 0..n_groups {
            let size = if Some(g) == empty {
                0
            } else if Some(g) == zero {
                2.max(1 + rng.below(max_size))
            } else {
                1 + rng.below(max_size)
            };
            assert!(
                next + size < all.len(),
                "Lasso::random: {n_groups} groups of up to {max_size} do not fit with one \
                 element to spare"
            );
            for &(t, e) in &all[next..next + size] {
                groups.tensor.push(t);
                groups.elem.push(e);
                if Some(g) == zero {
                    // -0.0 for one of them: the sign of a zero must not matter.
                    vals[t][e] = if groups.tensor.len() % 2 == 0 {
                        0.0
                    } else {
                        -0.0
                    };
                }
            }
            next += size;
            groups.start.push(next);
            groups.coef.push(rng.uniform_range(0.05, 2.0));
        }
        Lasso {
            shapes,
            vals,
            grads0,
            groups,
            empty,
            zero,
        }
    }

    /// The kernel's int64 index arrays: start, tensor, elem.
    pub fn index_arrays(&self) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
        let c = |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<i64>>();
        (
            c(&self.groups.start),
            c(&self.groups.tensor),
            c(&self.groups.elem),
        )
    }

    /// `group_lasso_grad` on the host (one block of `B` threads, as the CUDA launcher):
    /// updated gradients, the f64 scratch `contrib` and the penalty. Scratch and penalty start
    /// as NaN, so anything left unwritten shows.
    pub fn host(&self) -> (Vec<Vec<f32>>, Vec<f64>, f32) {
        let (start, tensor, elem) = self.index_arrays();
        let mut grads = self.grads0.clone();
        let vptrs: Vec<*const f32> = self.vals.iter().map(|v| v.as_ptr()).collect();
        let gptrs: Vec<*mut f32> = grads.iter_mut().map(|v| v.as_mut_ptr()).collect();
        let mut contrib = vec![f64::NAN; self.groups.len()];
        let mut penalty = f32::NAN;
        let p = LassoParams {
            groups: self.groups.len() as i64,
            members: self.groups.tensor.len() as i64,
        };
        unsafe {
            host_group_lasso_grad(
                Launch::d1(1, B),
                vptrs.as_ptr(),
                gptrs.as_ptr(),
                start.as_ptr(),
                tensor.as_ptr(),
                elem.as_ptr(),
                self.groups.coef.as_ptr(),
                contrib.as_mut_ptr(),
                &mut penalty,
                p,
            )
        };
        (grads, contrib, penalty)
    }

    /// The CPU backend's `group_lasso_grad`: updated gradients and the penalty.
    pub fn cpu(&self) -> (Vec<Vec<f32>>, f32) {
        let vals: Vec<Tensor> = self
            .vals
            .iter()
            .zip(&self.shapes)
            .map(|(v, s)| t(v, s))
            .collect();
        let mut grads: Vec<Tensor> = self
            .grads0
            .iter()
            .zip(&self.shapes)
            .map(|(v, s)| t(v, s))
            .collect();
        let vrefs: Vec<&Tensor> = vals.iter().collect();
        let mut grefs: Vec<&mut Tensor> = grads.iter_mut().collect();
        let pen = cpu()
            .group_lasso_grad(&vrefs, &mut grefs, &self.groups)
            .unwrap();
        (
            grads.iter().map(|g| g.cpu().to_vec()).collect(),
            pen.item().unwrap(),
        )
    }
}

/// The bit patterns of `v` (an exact comparison that also tells -0.0 from 0.0).
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
