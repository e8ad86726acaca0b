//! Embedding the engine: a small conv net with switches, one training step, then the
//! gradients and the switch curvatures read back.
//!
//! `cargo run --release --example train_step`

use bayesnas_engine::nn::{BatchNorm2d, Conv2d, Linear};
use bayesnas_engine::prelude::*;

fn main() -> Result<()> {
    // The CPU kernels share their work best when called from a thread of the engine's pool.
    bayesnas_engine::run_in_pool(step)
}

fn step() -> Result<()> {
    let mut rng = Rng::new(42);
    let mut store = ParamStore::new();
    let (c, classes) = (8, 10);

    // stem: conv 3x3 -> BN -> ReLU
    let stem = Conv2d::new(
        &mut store,
        "stem",
        "weights",
        1,
        c,
        3,
        Conv2dSpec::new().padding(1),
        false,
        &mut rng,
    )?;
    let stem_bn = BatchNorm2d::new(&mut store, "stem_bn", "weights", c, true)?;
    // one edge with three candidate operations gated by switches
    let branch = Conv2d::new(
        &mut store,
        "edge.conv",
        "weights",
        c,
        c,
        3,
        Conv2dSpec::new().padding(1),
        false,
        &mut rng,
    )?;
    let branch_bn = BatchNorm2d::new(&mut store, "edge.bn", "weights", c, false)?;
    let s = store.add("edge.s", "switches", Tensor::full(&[3], 1.0))?;
    let s0 = store.add("edge.s0", "switches", Tensor::full(&[1], 1.0))?;
    let head = Linear::new(
        &mut store,
        "classifier",
        "weights",
        c,
        classes,
        true,
        &mut rng,
    )?;

    // a random batch (a real program feeds images from bayesnas-data)
    let x = Tensor::randn(&[16, 1, 28, 28], 1.0, &mut rng);
    let labels: Vec<u32> = (0..16).map(|i| i % classes as u32).collect();

    let mut tape = Tape::new();
    let xv = tape.input(x);
    let h = stem.forward(&mut tape, &store, xv)?;
    let h = stem_bn.forward(&mut tape, &mut store, h)?;
    let h = tape.relu(h)?;
    let r = tape.relu(h)?;
    let b1 = branch.forward(&mut tape, &store, r)?;
    let b1 = branch_bn.forward(&mut tape, &mut store, b1)?;
    let b2 = tape.max_pool2d(
        h,
        Pool2dSpec {
            kernel: 3,
            stride: 1,
            padding: 1,
        },
    )?;
    let (sv, s0v) = (tape.param(&store, s), tape.param(&store, s0));
    let edge = tape.mixed(&[b1, b2, h], sv, s0v)?;
    let pooled = tape.global_avg_pool(edge)?;
    let logits = head.forward(&mut tape, &store, pooled)?;
    let loss = tape.cross_entropy(logits, &labels)?;
    println!("loss {:.4}", tape.value(loss).item()?);

    // gradient pass, then the diagonal-curvature pass over the same tape (no extra forward)
    let grads = tape.backward(loss)?;
    let curv = tape.curvature_backward(loss)?;
    store.accumulate_grads(&grads)?;
    store.accumulate_curvature(&curv)?;
    println!("d loss / d switches      {:?}", store.get(s).grad.to_vec());
    println!("d loss / d parent switch {:?}", store.get(s0).grad.to_vec());
    println!(
        "curvature of switches    {:?}",
        store.get(s).curvature.to_vec()
    );
    println!(
        "curvature of parent      {:?}",
        store.get(s0).curvature.to_vec()
    );

    // one SGD step: weights with decay, switches without
    let opt = Sgd::new()
        .group(
            "weights",
            SgdGroup {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 3e-4,
            },
        )
        .group(
            "switches",
            SgdGroup {
                lr: 0.01,
                momentum: 0.9,
                weight_decay: 0.0,
            },
        );
    let scale = clip_scale(grad_norm(&store, &[])?, 5.0)?;
    opt.step(&mut store, cosine_factor(0, 100, 0.0), scale)?;
    println!("switches after one step  {:?}", store.value(s).to_vec());
    Ok(())
}
