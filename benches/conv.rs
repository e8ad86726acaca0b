//! CPU convolution kernels at supernet shapes (batch 32).
//!
//! Names are `<op>_<pass>/n<N>_c<C>_<H>x<W>` with `pass` in `fwd`, `bwd_in` (input
//! gradient) and `bwd_w` (weight gradient), so they line up with a PyTorch script timing
//! the same shapes:
//! - `dw3x3`, `dw5x5`: depthwise, stride 1, pad (k-1)/2; `dil3x3`, `dil5x5`: depthwise,
//!   dilation 2, pad 2 / 4; `dw3x3s2`: depthwise stride 2 (reduction cells);
//! - `pw1x1`: pointwise C -> C; `pw1x1s2`: C -> C/2 at stride 2 (factorized reduce);
//! - `stem3x3`: dense 3 -> 48 channels, pad 1, at 32x32.
//!
//! Shapes: C = 16 at 32x32, C = 32 and 64 at 16x16 (the supernet's three stages).
//! Run: `cargo bench --bench conv` (each benchmark measures for about a second).

#[path = "util/pool.rs"]
mod pool;
use pool::iter_in_pool;

use std::hint::black_box;
use std::time::Duration;

use bayesnas_engine::{Backend, Conv2dSpec, Device, Rng, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};

const BATCH: usize = 32;
/// (channels, spatial size) of the three supernet stages.
const STAGES: [(usize, usize); 3] = [(16, 32), (32, 16), (64, 16)];

struct Conv {
    x: Tensor,
    w: Tensor,
    dy: Tensor,
    spec: Conv2dSpec,
}

impl Conv {
    fn new(
        c_in: usize,
        c_out: usize,
        hw: usize,
        k: usize,
        spec: Conv2dSpec,
        rng: &mut Rng,
    ) -> Conv {
        let b = backend();
        let x = Tensor::randn(&[BATCH, c_in, hw, hw], 1.0, rng);
        let w = Tensor::randn(&[c_out, c_in / spec.groups, k, k], 0.1, rng);
        let y = b
            .conv2d_forward(&x, &w, spec)
            .expect("valid benchmark shape");
        let dy = Tensor::randn(y.shape(), 1.0, rng);
        Conv { x, w, dy, spec }
    }

    /// Times the three passes under `<name>_fwd`, `<name>_bwd_in`, `<name>_bwd_w`.
    fn bench(&self, c: &mut Criterion, name: &str, id: &str) {
        let b = backend();
        let passes: [(&str, &(dyn Fn() -> Tensor + Sync)); 3] = [
            ("fwd", &|| {
                b.conv2d_forward(&self.x, &self.w, self.spec).unwrap()
            }),
            ("bwd_in", &|| {
                b.conv2d_backward_input(&self.dy, &self.w, self.spec, self.x.shape())
                    .unwrap()
            }),
            ("bwd_w", &|| {
                b.conv2d_backward_weight(&self.x, &self.dy, self.spec, self.w.shape())
                    .unwrap()
            }),
        ];
        for (pass, f) in passes {
            let mut g = group(c, &format!("{name}_{pass}"));
            g.bench_function(id, |bch| iter_in_pool(bch, || black_box(f())));
            g.finish();
        }
    }
}

fn backend() -> &'static dyn Backend {
    Device::Cpu.backend().expect("cpu backend")
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1000));
    g
}

fn depthwise(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    // (name, k, dilation, stride)
    let kinds = [
        ("dw3x3", 3, 1, 1),
        ("dw5x5", 5, 1, 1),
        ("dil3x3", 3, 2, 1),
        ("dil5x5", 5, 2, 1),
        ("dw3x3s2", 3, 1, 2),
    ];
    for (name, k, d, s) in kinds {
        for (ch, hw) in STAGES {
            // Strided depthwise convs only run in reduction cells, on the first two stages.
            if s == 2 && ch == 64 {
                continue;
            }
            let spec = Conv2dSpec::new()
                .stride(s)
                .padding((k - 1) / 2 * d)
                .dilation(d)
                .groups(ch);
            let conv = Conv::new(ch, ch, hw, k, spec, &mut rng);
            conv.bench(c, name, &format!("n{BATCH}_c{ch}_{hw}x{hw}"));
        }
    }
}

fn pointwise(c: &mut Criterion) {
    let mut rng = Rng::new(2);
    for (ch, hw) in STAGES {
        let id = format!("n{BATCH}_c{ch}_{hw}x{hw}");
        Conv::new(ch, ch, hw, 1, Conv2dSpec::new(), &mut rng).bench(c, "pw1x1", &id);
    }
    for (ch, hw) in &STAGES[..2] {
        let id = format!("n{BATCH}_c{ch}_{hw}x{hw}");
        Conv::new(*ch, ch / 2, *hw, 1, Conv2dSpec::new().stride(2), &mut rng)
            .bench(c, "pw1x1s2", &id);
    }
}

fn stem(c: &mut Criterion) {
    let mut rng = Rng::new(3);
    let conv = Conv::new(3, 48, 32, 3, Conv2dSpec::new().padding(1), &mut rng);
    conv.bench(c, "stem3x3", &format!("n{BATCH}_c3to48_32x32"));
}

criterion_group!(benches, depthwise, pointwise, stem);
criterion_main!(benches);
