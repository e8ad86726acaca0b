//! Batch-norm and pooling kernels of the CPU backend at supernet shapes (batch 32; C = 16 at
//! 32x32, C = 32 and 64 at 16x16): training batch-norm forward and backward, and the 3x3
//! max and average pools (pad 1, stride 1 and 2), forward and backward.
//!
//! Max pooling is timed as PyTorch's `max_pool2d_with_indices` and its backward: the forward
//! includes the argmax output, the backward scatters from the stored argmax.
//!
//! `cargo bench --bench bn_pool`; names are `<kernel>/n<N>_c<C>_<H>x<W>`.

#[path = "util/pool.rs"]
mod pool;
use pool::iter_in_pool;

use std::hint::black_box;
use std::time::Duration;

use bayesnas_engine::prelude::*;
use bayesnas_engine::Backend;
use criterion::{criterion_group, criterion_main, Criterion};

const SHAPES: [[usize; 4]; 3] = [[32, 16, 32, 32], [32, 32, 16, 16], [32, 64, 16, 16]];

fn name(s: &[usize; 4]) -> String {
    format!("n{}_c{}_{}x{}", s[0], s[1], s[2], s[3])
}

fn backend() -> &'static dyn Backend {
    Device::Cpu.backend().expect("cpu backend")
}

fn batch_norm(c: &mut Criterion) {
    let be = backend();
    let mut rng = Rng::new(1);
    for shape in &SHAPES {
        let x = Tensor::randn(shape, 1.0, &mut rng);
        let dy = Tensor::randn(shape, 1.0, &mut rng);
        c.benchmark_group("bn_fwd")
            .bench_function(name(shape), |b| {
                iter_in_pool(b, || {
                    be.batch_norm_train_forward(black_box(&x), None, None, 1e-5)
                        .unwrap()
                })
            });
        let f = be.batch_norm_train_forward(&x, None, None, 1e-5).unwrap();
        c.benchmark_group("bn_bwd")
            .bench_function(name(shape), |b| {
                iter_in_pool(b, || {
                    be.batch_norm_backward(black_box(&dy), black_box(&x), &f.mean, &f.invstd, None)
                        .unwrap()
                })
            });
    }
}

fn pooling(c: &mut Criterion) {
    let be = backend();
    let mut rng = Rng::new(2);
    for stride in [1, 2] {
        let spec = Pool2dSpec {
            kernel: 3,
            stride,
            padding: 1,
        };
        for shape in &SHAPES {
            let x = Tensor::randn(shape, 1.0, &mut rng);
            let y_shape = spec.out_shape(*shape);
            let dy = Tensor::randn(&y_shape, 1.0, &mut rng);
            let id = name(shape);
            // Forward with the argmax output; backward scatters `dy` through the stored
            // argmax (the work of PyTorch's max_pool2d_with_indices and its backward).
            c.benchmark_group(format!("maxpool3x3s{stride}_fwd"))
                .bench_function(&id, |b| {
                    iter_in_pool(b, || be.max_pool2d_forward(black_box(&x), spec).unwrap())
                });
            let (_, argmax) = be.max_pool2d_forward(&x, spec).unwrap();
            c.benchmark_group(format!("maxpool3x3s{stride}_bwd"))
                .bench_function(&id, |b| {
                    iter_in_pool(b, || {
                        be.max_pool2d_backward(black_box(&argmax), black_box(&dy), shape)
                            .unwrap()
                    })
                });
            c.benchmark_group(format!("avgpool3x3s{stride}_fwd"))
                .bench_function(&id, |b| {
                    iter_in_pool(b, || be.avg_pool2d_forward(black_box(&x), spec).unwrap())
                });
            c.benchmark_group(format!("avgpool3x3s{stride}_bwd"))
                .bench_function(&id, |b| {
                    iter_in_pool(b, || {
                        be.avg_pool2d_backward(black_box(&dy), spec, shape, 1)
                            .unwrap()
                    })
                });
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = batch_norm, pooling
}
criterion_main!(benches);
