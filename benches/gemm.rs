//! Picks the GEMM crate behind pointwise/dense convolutions and linear layers by measurement:
//! `gemm` (0.19) against `matrixmultiply` (0.3, "threading" feature) on the shapes the
//! supernet's 1x1 convolutions produce. The figures are recorded at the top of
//! `src/device/cpu/gemm.rs`.
//!
//! Every product is `C[m, n] = A[m, k] B[k, n]` on row-major data, per image:
//! - `fwd`: `Y = W X` (W `[c_out, c_in]`, X `[c_in, hw]`), the pointwise forward;
//! - `bwd_in`: `dX = W^T dY` (the transposed weight read through strides);
//! - `bwd_w`: `dW += dY X^T` (the reduction over pixels, accumulated over images).
//!
//! Each shape is timed three ways: one image on one thread (`1img`), one image with the
//! crate's own parallelism (`1img_par`), and a batch of 32 images split over images with
//! rayon, one single-threaded product per image (`b32`) — the way the conv kernels call it.
//!
//! Run: `cargo bench --bench gemm -- --quick`.

#[path = "util/pool.rs"]
mod pool;
use pool::iter_in_pool;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gemm::Parallelism;
use rayon::prelude::*;

/// Row-major operand with explicit strides.
#[derive(Clone, Copy)]
struct View {
    rs: isize,
    cs: isize,
}

const fn row_major(cols: usize) -> View {
    View {
        rs: cols as isize,
        cs: 1,
    }
}

const fn col_major(rows: usize) -> View {
    View {
        rs: 1,
        cs: rows as isize,
    }
}

#[derive(Clone, Copy)]
enum Crate {
    Gemm,
    MatrixMultiply,
}

/// `c = a b (+ c when accumulate)`, shapes `[m, k] x [k, n]`.
#[allow(clippy::too_many_arguments)]
fn product(
    which: Crate,
    par: bool,
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    va: View,
    b: &[f32],
    vb: View,
    c: &mut [f32],
    accumulate: bool,
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: the asserts above bound every index the views reach (dense operands).
    unsafe {
        match which {
            Crate::Gemm => gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                accumulate,
                a.as_ptr(),
                va.cs,
                va.rs,
                b.as_ptr(),
                vb.cs,
                vb.rs,
                1.0,
                1.0,
                false,
                false,
                false,
                if par {
                    Parallelism::Rayon(0)
                } else {
                    Parallelism::None
                },
            ),
            Crate::MatrixMultiply => matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                va.rs,
                va.cs,
                b.as_ptr(),
                vb.rs,
                vb.cs,
                if accumulate { 1.0 } else { 0.0 },
                c.as_mut_ptr(),
                n as isize,
                1,
            ),
        }
    }
}

fn data(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) - 0.5
        })
        .collect()
}

const BATCH: usize = 32;

fn bench_gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200));
    // (c_out, c_in, hw): pointwise convolutions of the supernet (C = 16 at 32x32, 32 at
    // 16x16, 64 at 8x8 after two reductions, and the 3C stem / 4C cell-output widths).
    let shapes = [
        (16, 16, 1024),
        (32, 32, 256),
        (64, 64, 256),
        (64, 64, 64),
        (48, 64, 1024),
        (32, 16, 256),
    ];
    let crates = [("gemm", Crate::Gemm), ("mm", Crate::MatrixMultiply)];
    for &(co, ci, hw) in &shapes {
        let w = data(co * ci, 1);
        let x = data(BATCH * ci * hw, 2);
        let dy = data(BATCH * co * hw, 3);
        let shape = format!("m{co}_k{ci}_n{hw}");
        for &(name, which) in &crates {
            // Forward: Y[n] = W X[n].
            let mut y = vec![0.0f32; BATCH * co * hw];
            for (variant, parallel) in [("fwd_1img", false), ("fwd_1img_par", true)] {
                g.bench_function(format!("{name}_{variant}/{shape}"), |bch| {
                    iter_in_pool(bch, || {
                        product(
                            which,
                            parallel,
                            (co, ci, hw),
                            &w,
                            row_major(ci),
                            &x,
                            row_major(hw),
                            &mut y,
                            false,
                        );
                        black_box(&y);
                    })
                });
            }
            g.bench_function(format!("{name}_fwd_b32/{shape}"), |bch| {
                iter_in_pool(bch, || {
                    y.par_chunks_mut(co * hw)
                        .zip(x.par_chunks(ci * hw))
                        .for_each(|(y, x)| {
                            product(
                                which,
                                false,
                                (co, ci, hw),
                                &w,
                                row_major(ci),
                                x,
                                row_major(hw),
                                y,
                                false,
                            )
                        });
                    black_box(&y);
                })
            });
            // Backward input: dX[n] = W^T dY[n] (W read column-major).
            let mut dx = vec![0.0f32; BATCH * ci * hw];
            g.bench_function(format!("{name}_bwd_in_b32/{shape}"), |bch| {
                iter_in_pool(bch, || {
                    dx.par_chunks_mut(ci * hw)
                        .zip(dy.par_chunks(co * hw))
                        .for_each(|(dx, dy)| {
                            product(
                                which,
                                false,
                                (ci, co, hw),
                                &w,
                                col_major(ci),
                                dy,
                                row_major(hw),
                                dx,
                                false,
                            )
                        });
                    black_box(&dx);
                })
            });
            // Backward weight: dW = sum_n dY[n] X[n]^T, per-image partials (as the kernels do).
            let mut parts = vec![0.0f32; BATCH * co * ci];
            g.bench_function(format!("{name}_bwd_w_b32/{shape}"), |bch| {
                iter_in_pool(bch, || {
                    parts
                        .par_chunks_mut(co * ci)
                        .zip(dy.par_chunks(co * hw).zip(x.par_chunks(ci * hw)))
                        .for_each(|(p, (dy, x))| {
                            product(
                                which,
                                false,
                                (co, hw, ci),
                                dy,
                                row_major(hw),
                                x,
                                col_major(hw),
                                p,
                                false,
                            )
                        });
                    black_box(&parts);
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_gemm);
criterion_main!(benches);
