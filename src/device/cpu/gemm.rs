//! Matrix products on the CPU, over the `gemm` crate.
//!
//! Crate choice, by measurement (`cargo bench --bench gemm`, 2-core Xeon VM, release
//! profile, other builds running on the machine, so figures are noisy; medians in us, as
//! `gemm 0.19` / `matrixmultiply 0.3` with its "threading" feature). Shapes are the
//! pointwise convolutions' `M = c_out, K = c_in, N = H*W`; `b32` is a batch of 32 images,
//! one single-threaded product per image spread over rayon (how the conv kernels call it);
//! `bwd_in` reads `W^T` through strides, `bwd_w` multiplies by `X^T` (strided rhs) into
//! per-image partials.
//!
//! | shape (run 1) | fwd 1 img | fwd b32 | bwd_in b32 | bwd_w b32 |
//! |---|---|---|---|---|
//! | m16 k16 n1024 | 10 / 7 | 340 / 283 | 350 / 227 | 410 / 966 |
//! | m32 k16 n256 | 3 / 2 | 159 / 90 | 114 / 58 | 119 / 76 |
//! | m32 k32 n256 | 8 / 6 | 210 / 216 | 277 / 214 | 251 / 309 |
//! | m64 k64 n256 | 26 / 22 | 838 / 681 | 760 / 604 | 817 / 800 |
//! | m64 k64 n64 | 7 / 4 | 169 / 139 | 107 / 131 | 200 / 152 |
//! | m48 k64 n1024 | 72 / 68 | 1632 / 1820 | 2422 / 1831 | 1363 / 2853 |
//!
//! | shape (run 2) | fwd 1 img | fwd b32 | bwd_in b32 | bwd_w b32 |
//! |---|---|---|---|---|
//! | m16 k16 n1024 | 8 / 7 | 202 / 177 | 184 / 283 | 211 / 1005 |
//! | m32 k16 n256 | 4 / 4 | 168 / 154 | 177 / 132 | 114 / 152 |
//! | m32 k32 n256 | 8 / 6 | 289 / 242 | 187 / 295 | 373 / 318 |
//! | m64 k64 n256 | 29 / 20 | 652 / 795 | 698 / 758 | 1144 / 1094 |
//! | m64 k64 n64 | 7 / 6 | 232 / 188 | 282 / 170 | 304 / 165 |
//! | m48 k64 n1024 | 79 / 136 | 2639 / 2096 | 2348 / 2612 | 2584 / 3322 |
//!
//! Summed over the 18 batched products: `gemm` 10.5 ms vs 11.5 ms (run 1) and 12.8 ms vs
//! 14.0 ms (run 2). `matrixmultiply` is often faster on small single products, but its
//! weight-gradient product (`K = H*W` large, rhs transposed) is 2.4-4.8x slower at
//! `N = 1024`, which decides it: the engine depends on `gemm`; `matrixmultiply` stays a
//! dev-dependency of the bench only.
//!
//! Determinism: `gemm` splits a product over blocks of the output only; every output element
//! is summed over `k` in the same blocked order whatever the number of threads, so products
//! are reproducible run to run.

use gemm::Parallelism;
use std::mem::MaybeUninit;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A read-only strided matrix view: element `(i, j)` of the `rows x cols` matrix is
/// `data[i * rs + j * cs]`. A transpose is the same data with the strides swapped.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// The dense row-major `rows x cols` matrix at the start of `data`.
    pub(crate) fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transposed view (no copy).
    pub(crate) fn t(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Whether every element the view reaches lies inside `data`.
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1).checked_mul(self.rs).and_then(|a| {
            (self.cols - 1)
                .checked_mul(self.cs)
                .and_then(|b| a.checked_add(b))
        });
        matches!(last, Some(l) if l < self.data.len())
    }
}

/// `c = a b`, or `c += a b` when `accumulate`, with `c` the dense row-major
/// `a.rows x b.cols` matrix at the start of `c`. `parallel` lets `gemm` split the product
/// over the rayon pool (worth it only for large products; the convolution kernels call this
/// from inside their own parallel loops with `parallel = false`).
///
/// # Panics
/// When the operands' dimensions disagree or a view reaches outside its slice: callers
/// validate shapes first, so this guards the unsafe call against internal bugs only.
pub(crate) fn sgemm(c: &mut [f32], a: Mat<'_>, b: Mat<'_>, accumulate: bool, parallel: bool) {
    // SAFETY: `c` is a valid, exclusively borrowed slice of initialised floats.
    unsafe { sgemm_raw(c.as_mut_ptr(), c.len(), a, b, accumulate, parallel) }
}

/// `c = a b` into uninitialised memory (a fresh output): `gemm` writes every element of the
/// `a.rows x b.cols` destination without reading it, so no zeros need to be written first.
/// On return those elements are initialised.
pub(crate) fn sgemm_into(c: &mut [MaybeUninit<f32>], a: Mat<'_>, b: Mat<'_>, parallel: bool) {
    // SAFETY: `c` is valid and exclusively borrowed; with `accumulate = false` the
    // destination is only written (`MaybeUninit<f32>` has the layout of `f32`).
    unsafe { sgemm_raw(c.as_mut_ptr().cast::<f32>(), c.len(), a, b, false, parallel) }
}

/// # Safety
/// `c` points to `c_len` writable floats, readable too when `accumulate`, not aliased by
/// `a` or `b`.
unsafe fn sgemm_raw(
    c: *mut f32,
    c_len: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    accumulate: bool,
    parallel: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        b.rows == k && a.in_bounds() && b.in_bounds() && c_len >= m * n,
        "sgemm: inconsistent operands ({m}x{k}) * ({}x{n}) into {} elements",
        b.rows,
        c_len
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            // SAFETY: the caller's pointer covers `c_len >= m * n` floats.
            unsafe { std::slice::from_raw_parts_mut(c.cast::<MaybeUninit<f32>>(), m * n) }
                .fill(MaybeUninit::new(0.0));
        }
        return;
    }
    let parallelism = if parallel {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    // SAFETY: the assert above bounds every element `a` and `b` reach inside their slices
    // and the `m x n` row-major destination inside `c`, which is borrowed mutably (no alias).
    // Strides are at most the slice lengths, so they fit in `isize`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Products at least this large (multiply-adds) let `gemm` use the thread pool.
const PARALLEL_WORK: usize = 1 << 18;

/// 2-D matrix product `op(a) op(b)`, `op` transposing when asked.
pub(crate) fn matmul(a: &Tensor, trans_a: bool, b: &Tensor, trans_b: bool) -> Result<Tensor> {
    fn view<'t>(t: &'t Tensor, trans: bool, which: &'static str) -> Result<Mat<'t>> {
        match *t.shape() {
            [r, c] => {
                let m = Mat::row_major(t.cpu(), r, c);
                Ok(if trans { m.t() } else { m })
            }
            _ => Err(Error::Shape {
                op: which,
                expected: "a 2-D matrix".into(),
                found: format!("{:?}", t.shape()),
            }),
        }
    }
    let av = view(a, trans_a, "matmul lhs")?;
    let bv = view(b, trans_b, "matmul rhs")?;
    if av.cols != bv.rows {
        return Err(Error::Shape {
            op: "matmul",
            expected: format!(
                "rhs with {} rows (op(lhs) is {}x{})",
                av.cols, av.rows, av.cols
            ),
            found: format!("op(rhs) of {}x{}", bv.rows, bv.cols),
        });
    }
    let (m, k, n) = (av.rows, av.cols, bv.cols);
    let mut out = vec![0.0f32; m * n];
    let parallel = m.saturating_mul(n).saturating_mul(k) >= PARALLEL_WORK;
    sgemm(&mut out, av, bv, false, parallel);
    Tensor::from_vec(out, &[m, n])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &Tensor, ta: bool, b: &Tensor, tb: bool) -> Vec<f64> {
        let (ac, bc) = (a.shape()[1], b.shape()[1]);
        let (av, bv) = (a.cpu(), b.cpu());
        let at = |i: usize, j: usize| f64::from(if ta { av[j * ac + i] } else { av[i * ac + j] });
        let bt = |i: usize, j: usize| f64::from(if tb { bv[j * bc + i] } else { bv[i * bc + j] });
        let (m, k) = if ta {
            (ac, a.shape()[0])
        } else {
            (a.shape()[0], ac)
        };
        let n = if tb { b.shape()[0] } else { bc };
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
            }
        }
        out
    }

    #[test]
    fn matmul_matches_naive_for_every_transpose() {
        let mut rng = crate::rng::Rng::new(7);
        // Small and large enough to take the parallel path.
        for &(m, k, n) in &[(3usize, 5usize, 4usize), (70, 90, 65)] {
            for ta in [false, true] {
                for tb in [false, true] {
                    let ash = if ta { [k, m] } else { [m, k] };
                    let bsh = if tb { [n, k] } else { [k, n] };
                    let a = Tensor::randn(&ash, 1.0, &mut rng);
                    let b = Tensor::randn(&bsh, 1.0, &mut rng);
                    let c = matmul(&a, ta, &b, tb).unwrap();
                    assert_eq!(c.shape(), &[m, n]);
                    let want = naive(&a, ta, &b, tb);
                    for (g, w) in c.cpu().iter().zip(&want) {
                        assert!(
                            (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_rejects_bad_shapes() {
        let a = Tensor::full(&[2, 3], 1.0);
        let b = Tensor::full(&[4, 2], 1.0);
        assert!(matches!(
            matmul(&a, false, &b, false),
            Err(Error::Shape { .. })
        ));
        assert!(matmul(&a, false, &b, true).is_err());
        assert!(matmul(&a, true, &b, true).is_ok());
        let v = Tensor::full(&[3], 1.0);
        assert!(matches!(
            matmul(&v, false, &b, false),
            Err(Error::Shape { .. })
        ));
    }

    #[test]
    fn sgemm_accumulates_and_handles_empty_inner_dimension() {
        let a = [1.0f32, 2.0, 3.0, 4.0];
        let b = [1.0f32, 0.0, 0.0, 1.0];
        let mut c = [1.0f32; 4];
        sgemm(
            &mut c,
            Mat::row_major(&a, 2, 2),
            Mat::row_major(&b, 2, 2),
            true,
            false,
        );
        assert_eq!(c, [2.0, 3.0, 4.0, 5.0]);
        let mut c = [9.0f32; 4];
        sgemm(
            &mut c,
            Mat::row_major(&[], 2, 0),
            Mat::row_major(&[], 0, 2),
            false,
            false,
        );
        assert_eq!(c, [0.0; 4]);
    }
}
