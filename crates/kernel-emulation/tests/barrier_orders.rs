//! Every kernel that uses `__shared__` memory (or a global scratch buffer) and `__syncthreads`
//! run under several barrier orders (ascending, descending, three seeded shuffles; see
//! `set_thread_order`): the outputs must be bit-identical, so a kernel that reads shared data
//! another thread writes in the same barrier phase (a missing `__syncthreads`) fails here. The
//! arithmetic itself is checked against the CPU backend by `tests/kernels.rs`; a few loose CPU
//! checks here make sure the compared outputs are real results.
//! `planted_missing_barrier_is_caught` shows the check fails on a kernel copy with one barrier
//! removed (csrc/planted.cpp), which the ascending order alone does not catch.

use bayesnas_engine::device::cpu::CpuBackend;
use bayesnas_engine::device::Backend;
use bayesnas_engine::{Conv2dSpec, Rng};
use bayesnas_kernel_emulation::*;

mod common;
use common::*;

/// Output buffers of one run, as bit patterns (NaN-safe comparison).
#[derive(Default, PartialEq, Eq, Debug)]
struct Bits(Vec<(String, Vec<u64>)>);

impl Bits {
    fn f32(&mut self, name: &str, v: &[f32]) {
        assert!(
            v.iter().all(|x| x.is_finite()),
            "{name}: non-finite output (unwritten?)"
        );
        self.0
            .push((name.into(), v.iter().map(|x| x.to_bits() as u64).collect()));
    }
    fn f64(&mut self, name: &str, v: &[f64]) {
        assert!(
            v.iter().all(|x| x.is_finite()),
            "{name}: non-finite output (unwritten?)"
        );
        self.0
            .push((name.into(), v.iter().map(|x| x.to_bits()).collect()));
    }
}

/// Runs `run` under every order of `TEST_ORDERS` and requires the same bits; returns the
/// ascending run's outputs.
#[track_caller]
fn same_under_all_orders(what: &str, run: impl Fn() -> Bits) -> Bits {
    let reference = with_thread_order(Order::Ascending, &run);
    assert!(!reference.0.is_empty(), "{what}: no outputs");
    for order in TEST_ORDERS.iter().skip(1) {
        let got = with_thread_order(*order, &run);
        for ((name, want), (_, have)) in reference.0.iter().zip(&got.0) {
            if want != have {
                let at = want.iter().zip(have).position(|(a, b)| a != b).unwrap();
                panic!(
                    "{what}: {name} differs under {order:?} from ascending at {at} \
                     ({} of {} elements differ)",
                    want.iter().zip(have).filter(|(a, b)| a != b).count(),
                    want.len()
                );
            }
        }
    }
    reference
}

#[track_caller]
fn close(what: &str, got: &[f32], want: &[f32]) {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
    assert!(
        worst <= 1e-4 * scale,
        "{what}: max error {worst}, scale {scale}"
    );
}

fn first_f32(b: &Bits, i: usize) -> Vec<f32> {
    b.0[i].1.iter().map(|&x| f32::from_bits(x as u32)).collect()
}

#[test]
fn order_setting_is_thread_local_and_restored() {
    assert_eq!(thread_order(), Order::Ascending);
    with_thread_order(Order::Shuffled(7), || {
        assert_eq!(thread_order(), Order::Shuffled(7));
        std::thread::spawn(|| assert_eq!(thread_order(), Order::Ascending))
            .join()
            .unwrap();
        with_thread_order(Order::Descending, || {
            assert_eq!(thread_order(), Order::Descending)
        });
        assert_eq!(thread_order(), Order::Shuffled(7));
    });
    assert_eq!(thread_order(), Order::Ascending);
}

// elementwise.cu: reduce_dot_partial; pool.cu: gap_fwd
#[test]
fn block_sums_reduce_dot_and_gap() {
    let mut rng = Rng::new(101);
    for n in [1usize, 300, 5000] {
        let a = rvec(n, &mut rng);
        let b = rvec(n, &mut rng);
        for blocks in [1i64, 3] {
            same_under_all_orders(&format!("reduce_dot n{n} blocks{blocks}"), || {
                let mut out = Bits::default();
                let p = ReduceParams {
                    n: n as i64,
                    blocks,
                };
                let l = Launch::d1(blocks as u32, B);
                for bp in [std::ptr::null(), b.as_ptr()] {
                    let mut part = vec![f64::NAN; blocks as usize];
                    unsafe { host_reduce_dot_partial(l, a.as_ptr(), bp, part.as_mut_ptr(), p) };
                    out.f64("partials", &part);
                }
                out
            });
        }
    }
    let (n, c, h, w) = (3usize, 5usize, 9usize, 31usize);
    let x = rvec(n * c * h * w, &mut rng);
    let r = same_under_all_orders("gap_fwd", || {
        let p = PoolParams {
            n: n as i64,
            c: c as i64,
            h: h as i64,
            w: w as i64,
            ..Default::default()
        };
        let mut y = vec![f32::NAN; n * c];
        unsafe { host_gap_fwd(Launch::d1(4, B), x.as_ptr(), y.as_mut_ptr(), p) };
        let mut out = Bits::default();
        out.f32("y", &y);
        out
    });
    let want = CpuBackend
        .global_avg_pool_forward(&t(&x, &[n, c, h, w]))
        .unwrap();
    close("gap_fwd vs cpu", &first_f32(&r, 0), want.cpu());
}

// depthwise.cu: the tiled (shared-memory) forward and input-gradient paths, the generic path,
// and the weight-gradient block reductions.
#[test]
fn depthwise_tiles_and_weight_sums() {
    let mut rng = Rng::new(102);
    for (n, c, h, w, k, s, d, pad) in [
        (
            2usize, 2usize, 12usize, 13usize, 3usize, 1usize, 1usize, 1usize,
        ),
        (1, 2, 36, 40, 3, 1, 1, 1),
        (2, 1, 35, 33, 5, 1, 2, 4),
        (1, 2, 70, 14, 3, 2, 1, 1),
        (1, 1, 40, 30, 5, 2, 2, 4),
        (2, 2, 13, 11, 7, 1, 1, 3),
    ] {
        let spec = Conv2dSpec::new().stride(s).padding(pad).dilation(d);
        let (ho, wo) = (spec.out_size(h, k), spec.out_size(w, k));
        let what = format!("dw n{n} c{c} {h}x{w} k{k} s{s} d{d} p{pad}");
        let x = rvec(n * c * h * w, &mut rng);
        let wt = rvec(c * k * k, &mut rng);
        let dy = rvec(n * c * ho * wo, &mut rng);
        let base = dw_params(n, c, h, w, k, spec);
        let splits = n.min(2) as i32;
        let r = same_under_all_orders(&what, || {
            let mut out = Bits::default();
            for gx in [1u32, 3] {
                let l = Launch::d3(gx, c as u32, n as u32, B);
                let mut y = vec![f32::NAN; n * c * ho * wo];
                unsafe { host_dw_conv_fwd(l, x.as_ptr(), wt.as_ptr(), y.as_mut_ptr(), base) };
                out.f32("fwd", &y);
                if k == 3 {
                    unsafe {
                        host_dw_conv_fwd_k3(l, x.as_ptr(), wt.as_ptr(), y.as_mut_ptr(), base)
                    };
                    out.f32("fwd_k3", &y);
                }
                let mut dx = vec![f32::NAN; n * c * h * w];
                for square_w in [0, 1] {
                    let p = DwParams { square_w, ..base };
                    unsafe {
                        host_dw_conv_bwd_input(l, dy.as_ptr(), wt.as_ptr(), dx.as_mut_ptr(), p)
                    };
                    out.f32("bwd_input", &dx);
                }
            }
            for square_x in [0, 1] {
                let p = DwParams {
                    square_x,
                    splits,
                    ..base
                };
                let mut dw = vec![f32::NAN; c * k * k];
                unsafe {
                    host_dw_conv_bwd_weight(
                        Launch::d1(c as u32, B),
                        x.as_ptr(),
                        dy.as_ptr(),
                        dw.as_mut_ptr(),
                        p,
                    )
                };
                out.f32("bwd_weight", &dw);
                let mut part = vec![f32::NAN; c * splits as usize * k * k];
                unsafe {
                    host_dw_conv_bwd_weight_partial(
                        Launch::d3(c as u32, splits as u32, 1, B),
                        x.as_ptr(),
                        dy.as_ptr(),
                        part.as_mut_ptr(),
                        p,
                    )
                };
                out.f32("bwd_weight_partial", &part);
            }
            out
        });
        let want = CpuBackend
            .conv2d_forward(
                &t(&x, &[n, c, h, w]),
                &t(&wt, &[c, 1, k, k]),
                spec.groups(c),
            )
            .unwrap();
        close(&format!("{what} fwd vs cpu"), &first_f32(&r, 0), want.cpu());
    }
}

// conv_direct.cu: conv_bwd_weight_direct (block sum per weight element).
#[test]
fn direct_conv_weight_sums() {
    let mut rng = Rng::new(103);
    let (n, c_in, c_out, h, w, k, groups) = (2usize, 4usize, 6usize, 7usize, 6usize, 3usize, 2);
    let spec = Conv2dSpec::new().padding(1).groups(groups);
    let (ho, wo) = (spec.out_size(h, k), spec.out_size(w, k));
    let cig = c_in / groups;
    let x = rvec(n * c_in * h * w, &mut rng);
    let dy = rvec(n * c_out * ho * wo, &mut rng);
    same_under_all_orders("conv_bwd_weight_direct", || {
        let mut out = Bits::default();
        for square_x in [0, 1] {
            let p = ConvParams {
                n: n as i64,
                c_in: c_in as i64,
                c_out: c_out as i64,
                h: h as i64,
                w: w as i64,
                ho: ho as i64,
                wo: wo as i64,
                k: k as i32,
                stride: 1,
                padding: 1,
                dilation: 1,
                groups: groups as i32,
                square_x,
            };
            let mut dw = vec![f32::NAN; c_out * cig * k * k];
            unsafe {
                host_conv_bwd_weight_direct(
                    Launch::d1(5, B),
                    x.as_ptr(),
                    dy.as_ptr(),
                    dw.as_mut_ptr(),
                    p,
                )
            };
            out.f32("dw", &dw);
        }
        out
    });
}

// batchnorm.cu: every block reduction (one block per channel, and the split forms).
#[test]
fn batch_norm_reductions() {
    let mut rng = Rng::new(104);
    for (n, c, s) in [(2usize, 3usize, 35usize), (4, 2, 600), (1, 2, 3)] {
        let what = format!("bn n{n} c{c} s{s}");
        let x: Vec<f32> = rvec(n * c * s, &mut rng)
            .iter()
            .map(|v| 3.0 + 2.0 * v)
            .collect();
        let dy = rvec(n * c * s, &mut rng);
        let p = BnParams {
            n: n as i64,
            c: c as i64,
            s: s as i64,
            eps: 1e-5,
            splits: n as i32,
            ..Default::default()
        };
        let l = Launch::d1(c as u32, B);
        let ls = Launch::d3(c as u32, n as u32, 1, B);
        let r = same_under_all_orders(&what, || {
            let mut out = Bits::default();
            let (m, v, is) = bn_stats(l, &x, c, p);
            out.f32("mean", &m);
            out.f32("var", &v);
            out.f32("invstd", &is);
            let (sd, sdx) = bn_bwd_reduce(l, &dy, &x, &m, &is, c, p);
            out.f32("sum_dy", &sd);
            out.f32("sum_dy_xhat", &sdx);
            let mut cs = vec![f32::NAN; c];
            for y in [std::ptr::null(), dy.as_ptr()] {
                unsafe { host_channel_sums(l, x.as_ptr(), y, cs.as_mut_ptr(), p) };
                out.f32("channel_sums", &cs);
            }
            let mut part = vec![f64::NAN; 2 * c * n];
            unsafe { host_bn_stats_partial(ls, x.as_ptr(), part.as_mut_ptr(), p) };
            out.f64("stats_partial", &part);
            unsafe {
                host_bn_bwd_partial(
                    ls,
                    dy.as_ptr(),
                    x.as_ptr(),
                    m.as_ptr(),
                    part.as_mut_ptr(),
                    p,
                )
            };
            out.f64("bwd_partial", &part);
            let mut part1 = vec![f64::NAN; c * n];
            for y in [std::ptr::null(), dy.as_ptr()] {
                unsafe { host_channel_sums_partial(ls, x.as_ptr(), y, part1.as_mut_ptr(), p) };
                out.f64("channel_sums_partial", &part1);
            }
            out
        });
        let f = CpuBackend
            .batch_norm_train_forward(&t(&x, &[n, c, s]), None, None, 1e-5)
            .unwrap();
        close(
            &format!("{what} mean vs cpu"),
            &first_f32(&r, 0),
            f.mean.cpu(),
        );
    }
}

struct Mixed {
    xs: Vec<Vec<f32>>,
    dy: Vec<f32>,
    s0: Vec<f32>,
    s: Vec<f32>,
    p: MixedParams,
}

impl Mixed {
    fn new(n: usize, k: usize, inner: usize, chunks: i64, rng: &mut Rng) -> Mixed {
        Mixed {
            xs: (0..k).map(|_| rvec(n * inner, rng)).collect(),
            dy: rvec(n * inner, rng),
            s0: rvec(1, rng),
            s: rvec(k, rng),
            p: MixedParams {
                n: n as i64,
                inner: inner as i64,
                chunks,
                k: k as i32,
                ..Default::default()
            },
        }
    }
    fn blocks(&self) -> usize {
        (self.p.n * self.p.chunks) as usize
    }
    /// mixed_bwd (or the planted copy), returning the partials.
    fn bwd(&self, planted: bool) -> (Vec<Vec<f32>>, Vec<f64>) {
        let (k, len) = (self.p.k as usize, self.dy.len());
        let ptrs: Vec<*const f32> = self.xs.iter().map(|v| v.as_ptr()).collect();
        let mut dxs: Vec<Vec<f32>> = (0..k).map(|_| vec![f32::NAN; len]).collect();
        let dptrs: Vec<*mut f32> = dxs.iter_mut().map(|v| v.as_mut_ptr()).collect();
        let mut part = vec![f64::NAN; self.blocks() * k];
        let l = Launch::d1(self.blocks() as u32, B);
        let args = (
            ptrs.as_ptr(),
            self.dy.as_ptr(),
            self.s0.as_ptr(),
            self.s.as_ptr(),
            dptrs.as_ptr(),
            part.as_mut_ptr(),
        );
        unsafe {
            if planted {
                host_planted_mixed_bwd_late_sync(
                    l, args.0, args.1, args.2, args.3, args.4, args.5, self.p,
                )
            } else {
                host_mixed_bwd(l, args.0, args.1, args.2, args.3, args.4, args.5, self.p)
            }
        };
        (dxs, part)
    }
}

// The test-only planted kernel of csrc/planted.cpp (mixed_bwd with one barrier removed).
extern "C" {
    fn host_planted_mixed_bwd_late_sync(
        l: Launch,
        xs: *const *const f32,
        dy: *const f32,
        s0: *const f32,
        s: *const f32,
        dxs: *const *mut f32,
        part: *mut f64,
        p: MixedParams,
    );
}

// mixed.cu: mixed_bwd and mixed_curv, the single-sweep path (k <= 16) and the loop over
// branches (k > 16).
#[test]
fn mixed_op_reductions() {
    let mut rng = Rng::new(105);
    for (n, k, inner, chunks) in [
        (2usize, 3usize, 700usize, 2i64),
        (1, 16, 300, 1),
        (2, 17, 300, 2),
        (1, 20, 50, 3),
    ] {
        let m = Mixed::new(n, k, inner, chunks, &mut rng);
        same_under_all_orders(&format!("mixed n{n} k{k} inner{inner}"), || {
            let mut out = Bits::default();
            let (dxs, part) = m.bwd(false);
            for dx in &dxs {
                out.f32("dx", dx);
            }
            out.f64("r_partials", &part);
            let ptrs: Vec<*const f32> = m.xs.iter().map(|v| v.as_ptr()).collect();
            let mut hxs: Vec<Vec<f32>> = (0..k).map(|_| vec![f32::NAN; n * inner]).collect();
            let hptrs: Vec<*mut f32> = hxs.iter_mut().map(|v| v.as_mut_ptr()).collect();
            let mut hpart = vec![f64::NAN; m.blocks() * (k + 1)];
            unsafe {
                host_mixed_curv(
                    Launch::d1(m.blocks() as u32, B),
                    ptrs.as_ptr(),
                    m.dy.as_ptr(),
                    m.s0.as_ptr(),
                    m.s.as_ptr(),
                    hptrs.as_ptr(),
                    hpart.as_mut_ptr(),
                    m.p,
                )
            };
            for hx in &hxs {
                out.f32("hx", hx);
            }
            out.f64("hs_partials", &hpart);
            out
        });
    }
}

/// The control: a copy of mixed_bwd's k > 16 path without the barrier that ends each
/// branch's flush. Under ascending order it matches the real kernel bit for bit (the bug is
/// invisible to the old fixed-order emulation); every other order must expose it.
#[test]
fn planted_missing_barrier_is_caught() {
    let mut rng = Rng::new(106);
    let m = Mixed::new(2, 17, 300, 2, &mut rng);
    let want = m.bwd(false).1;
    let asc = with_thread_order(Order::Ascending, || m.bwd(true).1);
    assert_eq!(
        asc, want,
        "the planted kernel should pass under ascending order"
    );
    for order in TEST_ORDERS.iter().skip(1) {
        let got = with_thread_order(*order, || m.bwd(true).1);
        let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        eprintln!(
            "planted kernel under {order:?}: {differ} of {} partials differ",
            want.len()
        );
        assert!(differ > 0, "{order:?}: the missing barrier went unnoticed");
    }
    // and the harness itself reports it
    let caught = std::panic::catch_unwind(|| {
        same_under_all_orders("planted", || {
            let mut out = Bits::default();
            out.f64("r_partials", &m.bwd(true).1);
            out
        })
    });
    assert!(
        caught.is_err(),
        "same_under_all_orders accepted the planted kernel"
    );
}

// optim.cu: group_lasso_grad (a thread per group, then thread 0 adds the groups' f64
// contributions after the barrier).
#[test]
fn group_lasso_penalty_sum() {
    let mut rng = Rng::new(107);
    for (shapes, n_groups, max_size) in [
        (&[&[7usize][..], &[3, 5], &[2, 3, 4]][..], 9usize, 4usize),
        (&[&[1000], &[17, 9]], 500, 2),
    ] {
        let case = Lasso::random(shapes, n_groups, max_size, true, &mut rng);
        let r = same_under_all_orders(&format!("group_lasso {n_groups} groups"), || {
            let (grads, contrib, penalty) = case.host();
            let mut out = Bits::default();
            out.f32("penalty", &[penalty]);
            out.f64("contrib", &contrib);
            for g in &grads {
                out.f32("grad", g);
            }
            out
        });
        let (wgrads, wpenalty) = case.cpu();
        close("group_lasso penalty vs cpu", &first_f32(&r, 0), &[wpenalty]);
        for (i, w) in wgrads.iter().enumerate() {
            close("group_lasso grad vs cpu", &first_f32(&r, 2 + i), w);
        }
    }
}

/// `count_correct` (one block, a shared-memory tree over the threads' counts) against the
/// CPU backend, under every barrier order; ties go to the first largest logit.
#[test]
fn count_correct_tree_sum() {
    let mut rng = Rng::new(31);
    for (b, k) in [(1usize, 3usize), (7, 10), (256, 10), (600, 4), (1000, 1)] {
        let mut z = rvec(b * k, &mut rng);
        // Ties: some rows repeat their largest value further right.
        for r in (0..b).step_by(5) {
            let row = &mut z[r * k..(r + 1) * k];
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            row[k - 1] = m;
        }
        let labels: Vec<u32> = (0..b)
            .map(|r| {
                // Half the labels at the CPU's arg-max (so the count is not near 0).
                if r % 2 == 0 {
                    let row = &z[r * k..(r + 1) * k];
                    let mut best = 0;
                    for (j, &v) in row.iter().enumerate() {
                        if v > row[best] {
                            best = j;
                        }
                    }
                    best as u32
                } else {
                    rng.below(k) as u32
                }
            })
            .collect();
        let want = CpuBackend
            .count_correct(&t(&z, &[b, k]), &labels)
            .unwrap()
            .cpu()[0];
        assert!(want >= (b / 2) as f32, "{b}x{k}: {want}");
        let p = LossParams {
            b: b as i64,
            k: k as i64,
        };
        let got = same_under_all_orders(&format!("count_correct {b}x{k}"), || {
            let mut c = f32::NAN;
            unsafe {
                host_count_correct(Launch::d1(1, 256), z.as_ptr(), labels.as_ptr(), &mut c, p)
            };
            let mut bits = Bits(Vec::new());
            bits.f32("correct", &[c]);
            bits
        });
        assert_eq!(first_f32(&got, 0), vec![want], "{b}x{k}");
    }
}
