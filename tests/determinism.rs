//! Same seed, same thread count => bit-identical parameters after a few SGD steps.

mod common;

use bayesnas_engine::nn::{BatchNorm2d, Conv2d, Linear};
use bayesnas_engine::prelude::*;
use common::pool_spec;

fn train(seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let mut store = ParamStore::new();
    let c = 8;
    let stem = Conv2d::new(
        &mut store,
        "stem",
        "w",
        3,
        c,
        3,
        Conv2dSpec::new().padding(1),
        false,
        &mut rng,
    )
    .unwrap();
    let bn = BatchNorm2d::new(&mut store, "bn", "w", c, true).unwrap();
    let dw = Conv2d::new(
        &mut store,
        "dw",
        "w",
        c,
        c,
        3,
        Conv2dSpec::new().padding(2).dilation(2).groups(c),
        false,
        &mut rng,
    )
    .unwrap();
    let pw = Conv2d::new(
        &mut store,
        "pw",
        "w",
        c,
        c,
        1,
        Conv2dSpec::new(),
        false,
        &mut rng,
    )
    .unwrap();
    let bn2 = BatchNorm2d::new(&mut store, "bn2", "w", c, false).unwrap();
    let s = store.add("s", "sw", Tensor::full(&[2], 1.0)).unwrap();
    let s0 = store.add("s0", "sw", Tensor::full(&[1], 1.0)).unwrap();
    let fc = Linear::new(&mut store, "fc", "w", c, 10, true, &mut rng).unwrap();
    let opt = Sgd::new()
        .group(
            "w",
            SgdGroup {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 1e-4,
            },
        )
        .group(
            "sw",
            SgdGroup {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 0.0,
            },
        );
    let mut drng = rng.fork(1);
    for step in 0..4 {
        let x = Tensor::randn(&[8, 3, 16, 16], 1.0, &mut drng);
        let labels: Vec<u32> = (0..8).map(|_| drng.below(10) as u32).collect();
        let mut tape = Tape::new();
        let xv = tape.input(x);
        let h = stem.forward(&mut tape, &store, xv).unwrap();
        let h = bn.forward(&mut tape, &mut store, h).unwrap();
        let h = tape.relu(h).unwrap();
        let a = dw.forward(&mut tape, &store, h).unwrap();
        let a = pw.forward(&mut tape, &store, a).unwrap();
        let a = bn2.forward(&mut tape, &mut store, a).unwrap();
        let b = tape.avg_pool2d(h, pool_spec(3, 1, 1)).unwrap();
        let (sv, s0v) = (tape.param(&store, s), tape.param(&store, s0));
        let e = tape.mixed(&[a, b], sv, s0v).unwrap();
        let e = tape.drop_path(e, 0.2, &mut drng).unwrap();
        let p = tape.global_avg_pool(e).unwrap();
        let logits = fc.forward(&mut tape, &store, p).unwrap();
        let loss = tape.cross_entropy(logits, &labels).unwrap();
        store.zero_grads().unwrap();
        store
            .accumulate_grads(&tape.backward(loss).unwrap())
            .unwrap();
        store
            .accumulate_curvature(&tape.curvature_backward(loss).unwrap())
            .unwrap();
        let scale = clip_scale(grad_norm(&store, &[]).unwrap(), 5.0).unwrap();
        opt.step(&mut store, cosine_factor(step, 4, 0.0), scale)
            .unwrap();
    }
    store
        .iter()
        .flat_map(|(_, p)| [p.value.to_vec(), p.curvature.to_vec()])
        .collect()
}

#[test]
fn same_seed_same_parameters() {
    let a = train(3);
    let b = train(3);
    assert_eq!(a, b, "two runs with the same seed differ");
    let c = train(4);
    assert_ne!(a, c, "a different seed gave identical parameters");
}
