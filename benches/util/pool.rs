//! Shared by the benches: the timed loop runs on a thread of the CPU backend's pool, as
//! `bayesnas` runs its commands (`bayesnas_engine::run_in_pool`): a kernel called from there
//! shares its work with the other pool threads instead of handing all of it over and
//! sleeping until it is done.

use std::hint::black_box;
use std::time::Instant;

use criterion::Bencher;

/// `b.iter(f)`, with the iterations run on a pool thread.
pub fn iter_in_pool<R>(b: &mut Bencher, mut f: impl FnMut() -> R + Send) {
    b.iter_custom(|iters| {
        bayesnas_engine::run_in_pool(|| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(f());
            }
            start.elapsed()
        })
    })
}
