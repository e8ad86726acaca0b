//! The evaluation network: DARTS_V2's parameter count, genotype round trips, forward and
//! backward on a tiny network, bad genotypes, and checkpoints (resume equals an
//! uninterrupted run; wrong shapes are clear errors).

use bayesnas_engine::prelude::*;
use bayesnas_search::genotype::DARTS_V2;
use bayesnas_search::retrain::network::{EvalConfig, EvalNetwork};
use bayesnas_search::retrain::train::{Batch, TrainSettings, Trainer};
use bayesnas_search::{CellGenotype, Genotype, KeptEdge, KeptOp, Node, Op};

fn build(cfg: EvalConfig, g: &Genotype) -> (EvalNetwork, ParamStore) {
    let mut store = ParamStore::new();
    let net = EvalNetwork::new(cfg, g, &mut store, &mut Rng::new(0)).unwrap();
    (net, store)
}

fn tiny(image: usize, auxiliary: bool) -> EvalConfig {
    EvalConfig {
        channels: 4,
        cells: 3,
        in_channels: 1,
        image,
        classes: 3,
        auxiliary,
    }
}

/// DARTS' `train.py` prints "param size = 3.349342MB" for DARTS_V2 at 20 cells, C=36 on
/// CIFAR-10 (auxiliary head excluded).
#[test]
fn darts_v2_has_darts_parameter_count() {
    let g = Genotype::from_darts_string(DARTS_V2).unwrap();
    let (_, store) = build(EvalConfig::cifar(false), &g);
    assert_eq!(EvalNetwork::param_count(&store), 3_349_342);
    let (net, store) = build(EvalConfig::cifar(true), &g);
    assert!(net.has_aux());
    assert_eq!(EvalNetwork::param_count(&store), 3_349_342);
    // 576 -> 128 (1x1) + BN, 128 -> 768 (2x2) + BN, 768 -> 10
    assert_eq!(
        EvalNetwork::aux_param_count(&store),
        576 * 128 + 256 + 128 * 768 * 4 + 1536 + 7690
    );
}

/// A genotype of our own: several ops on one edge, a node dropped (n2), bayesnas edges.
fn ours() -> Genotype {
    let op = |op| KeptOp {
        op,
        relevance: Some(0.5),
    };
    let e = |from, to, ops| KeptEdge { from, to, ops };
    Genotype {
        space: "bayesnas".into(),
        normal: CellGenotype {
            edges: vec![
                e(Node::In0, 0, vec![op(Op::SepConv3x3), op(Op::SkipConnect)]),
                e(Node::In1, 1, vec![op(Op::DilConv5x5)]),
                e(Node::Inter(0), 3, vec![op(Op::AvgPool3x3)]),
                e(Node::In1, 3, vec![op(Op::SepConv5x5)]),
            ],
            concat: vec![1, 3],
        },
        reduce: CellGenotype {
            edges: vec![
                e(Node::In0, 0, vec![op(Op::MaxPool3x3), op(Op::SkipConnect)]),
                e(Node::In1, 2, vec![op(Op::DilConv3x3)]),
                e(Node::Inter(0), 1, vec![op(Op::SepConv3x3)]),
            ],
            concat: vec![0, 1, 2],
        },
    }
}

fn layout(store: &ParamStore) -> Vec<(String, Vec<usize>)> {
    store
        .iter()
        .map(|(_, p)| (p.name.clone(), p.value.shape().to_vec()))
        .collect()
}

#[test]
fn genotypes_round_trip_through_json_and_build_the_same_network() {
    for g in [ours(), Genotype::from_darts_string(DARTS_V2).unwrap()] {
        let back = Genotype::from_json(&g.to_json().unwrap()).unwrap();
        assert_eq!(back, g);
        let (_, a) = build(tiny(28, true), &g);
        let (_, b) = build(tiny(28, true), &back);
        assert_eq!(layout(&a), layout(&b));
    }
    // ours: the normal cell outputs 2 nodes, the reduction cell 3
    let (net, store) = build(tiny(28, false), &ours());
    let classifier = store.find("classifier.weight").unwrap();
    assert_eq!(store.value(classifier).shape(), &[3, 3 * 16]);
    // skip_connect on a reduction edge is a factorized reduce with parameters
    assert!(store.find("cells.1._ops.1.conv_1.weight").is_some());
    assert_eq!(net.cells.len(), 3);
}

#[test]
fn forward_and_backward_on_a_tiny_network_with_auxiliary_head() {
    let (net, mut store) = build(tiny(28, true), &ours());
    let mut rng = Rng::new(3);
    let mut tape = Tape::new();
    let x = tape.input(Tensor::randn(&[4, 1, 28, 28], 1.0, &mut rng));
    let out = net
        .forward(&mut tape, &mut store, x, 0.3, &mut rng)
        .unwrap();
    assert_eq!(tape.value(out.logits).shape(), &[4, 3]);
    let aux = out
        .aux_logits
        .expect("training tape computes the auxiliary logits");
    assert_eq!(tape.value(aux).shape(), &[4, 3]);
    let a = tape.cross_entropy(out.logits, &[0, 1, 2, 0]).unwrap();
    let b = tape.cross_entropy(aux, &[0, 1, 2, 0]).unwrap();
    let loss = tape.add(a, b).unwrap();
    let g = tape.backward(loss).unwrap();
    let stem = store.find("stem.0.weight").unwrap();
    assert!(g.param(stem).unwrap().all_finite());
    let head = store
        .find("auxiliary_head.features.5.weight")
        .map(|id| g.param(id).unwrap().clone())
        .unwrap();
    assert!(head.to_vec().iter().any(|&v| v != 0.0));
    // evaluation: no auxiliary logits, deterministic
    let mut e1 = Tape::new_eval();
    let x1 = e1.input(Tensor::full(&[2, 1, 28, 28], 0.5));
    let o1 = net.forward(&mut e1, &mut store, x1, 0.3, &mut rng).unwrap();
    assert!(o1.aux_logits.is_none());
    let mut e2 = Tape::new_eval();
    let x2 = e2.input(Tensor::full(&[2, 1, 28, 28], 0.5));
    let o2 = net.forward(&mut e2, &mut store, x2, 0.3, &mut rng).unwrap();
    assert_eq!(e1.value(o1.logits).to_vec(), e2.value(o2.logits).to_vec());
}

#[test]
fn bad_genotypes_and_shapes_are_clear_errors() {
    let json = ours().to_json().unwrap();
    let unknown_op = json.replacen("dil_conv_5x5", "conv_7x7", 1);
    let e = Genotype::from_json(&unknown_op).unwrap_err().to_string();
    assert!(
        e.contains("conv_7x7") && e.contains("unknown operation"),
        "{e}"
    );
    let bad_node = json.replacen("\"n3\"", "\"n7\"", 1);
    let e = Genotype::from_json(&bad_node).unwrap_err().to_string();
    assert!(e.contains("n7"), "{e}");
    let e = Genotype::from_darts_string(&DARTS_V2.replacen("sep_conv_3x3", "sep_conv_9x9", 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("sep_conv_9x9"), "{e}");
    let e = Genotype::from_darts_string(&DARTS_V2.replacen(
        "('dil_conv_3x3', 2)",
        "('dil_conv_3x3', 9)",
        1,
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains('9'), "{e}");
    // auxiliary head on maps too small for its pooling
    let mut store = ParamStore::new();
    let e = EvalNetwork::new(tiny(16, true), &ours(), &mut store, &mut Rng::new(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("auxiliary"), "{e}");
    let e = EvalNetwork::new(tiny(14, false), &ours(), &mut store, &mut Rng::new(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("odd") || e.contains("even"), "{e}");
}

/// Class-dependent blobs on 8x8 images: learnable, deterministic given the epoch.
fn blobs(epoch: usize, n: usize) -> Vec<Batch> {
    let mut rng = Rng::new(100 + epoch as u64);
    (0..n)
        .map(|_| {
            let labels: Vec<u32> = (0..8).map(|_| rng.below(3) as u32).collect();
            let mut x = Tensor::randn(&[8, 1, 8, 8], 0.5, &mut rng).into_vec();
            for (i, &l) in labels.iter().enumerate() {
                for v in &mut x[i * 64 + l as usize * 16..i * 64 + l as usize * 16 + 16] {
                    *v += 1.5;
                }
            }
            (Tensor::from_vec(x, &[8, 1, 8, 8]).unwrap(), labels)
        })
        .collect()
}

fn trainer(channels: usize) -> Trainer {
    let cfg = EvalConfig {
        channels,
        cells: 3,
        in_channels: 1,
        image: 8,
        classes: 3,
        auxiliary: false,
    };
    let g = Genotype::from_darts_string(DARTS_V2).unwrap();
    let (net, store) = build(cfg, &g);
    let settings = TrainSettings {
        epochs: 2,
        lr: 0.05,
        drop_path: 0.3,
        seed: 4,
        ..TrainSettings::default()
    };
    Trainer::new(net, store, settings, Device::Cpu).unwrap()
}

fn epoch(t: &mut Trainer) {
    let e = t.epochs_done;
    let mut it = blobs(e, 4).into_iter().map(Ok);
    let (loss, acc, ips) = t.train_epoch(&mut it, &mut |_, _, _, _| {}).unwrap();
    assert!(loss.is_finite() && (0.0..=1.0).contains(&acc) && ips > 0.0);
    let mut v = blobs(99, 2).into_iter().map(Ok);
    let (vl, va) = t.evaluate(&mut v).unwrap();
    t.finish_epoch(bayesnas_search::retrain::train::TrainRecord {
        epoch: e,
        lr: t.settings.lr_at(e),
        drop_path: t.settings.drop_path_at(e),
        train_loss: loss,
        train_accuracy: acc,
        val_loss: vl,
        val_accuracy: va,
        images_per_s: ips,
    });
}

#[test]
fn resume_continues_exactly_and_wrong_checkpoints_are_refused() {
    let dir = std::env::temp_dir().join(format!("bayesnas-evalnet-{}", std::process::id()));
    let ck = dir.join("checkpoint.safetensors");
    let mut a = trainer(4);
    epoch(&mut a);
    a.save_checkpoint(&ck).unwrap();
    epoch(&mut a);
    assert!(a.finished());

    let mut b = trainer(4);
    b.load_checkpoint(&ck).unwrap();
    assert_eq!(b.epochs_done, 1);
    epoch(&mut b);
    for (id, p) in a.store.iter() {
        assert_eq!(p.value.to_vec(), b.store.value(id).to_vec(), "{}", p.name);
    }
    let strip = |h: &[bayesnas_search::retrain::train::TrainRecord]| {
        h.iter()
            .map(|r| (r.train_loss, r.train_accuracy, r.val_loss, r.val_accuracy))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&a.history), strip(&b.history));

    // a checkpoint of another width: the error names the tensor and both shapes
    let mut c = trainer(6);
    let e = c.load_checkpoint(&ck).unwrap_err().to_string();
    assert!(
        e.contains("checkpoint.safetensors") && e.contains("shape") && e.contains("stem.0.weight"),
        "{e}"
    );
    assert_eq!(c.epochs_done, 0);
    // trained weights are not a checkpoint
    let w = dir.join("weights.safetensors");
    a.save_weights(&w).unwrap();
    let e = b.load_checkpoint(&w).unwrap_err().to_string();
    assert!(e.contains("not a bayesnas train checkpoint"), "{e}");
    // other settings
    let mut d = trainer(4);
    d.settings.lr = 0.1;
    let e = d.load_checkpoint(&ck).unwrap_err().to_string();
    assert!(e.contains("settings differ"), "{e}");
    std::fs::remove_dir_all(dir).ok();
}
