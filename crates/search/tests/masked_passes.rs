//! `Tape::backward_for` and `Tape::curvature_backward_for` on a real supernet: the wanted
//! parameters' gradients and curvatures are bit for bit those of the full passes, no other
//! parameter gets one, and the restricted pass does less work (fewer backend calls, counted
//! by `device::counters`). The search's curvature pass wants only the switches.

use bayesnas_engine::device::counters;
use bayesnas_engine::prelude::*;
use bayesnas_search::supernet::{Supernet, SupernetConfig, SWITCHES, WEIGHTS};
use bayesnas_search::SearchSpace;

/// A recorded forward of a 3-cell supernet on random images, its store and the loss var.
fn recorded(space: SearchSpace, seed: u64) -> (Tape, ParamStore, Var) {
    let config = SupernetConfig {
        space,
        channels: 4,
        cells: 3,
        in_channels: 1,
        image: 8,
        classes: 10,
    };
    let mut store = ParamStore::new();
    let mut rng = Rng::new(seed);
    let net = Supernet::new(config, &mut store, &mut rng).unwrap();
    // Switches away from 1 so that every path carries distinct values.
    for (id, p) in store
        .iter()
        .map(|(i, p)| (i, p.group.clone()))
        .collect::<Vec<_>>()
    {
        if p == SWITCHES {
            let n = store.value(id).numel();
            let v: Vec<f32> = (0..n).map(|_| 0.5 + rng.uniform() as f32).collect();
            *store.value_mut(id) = Tensor::from_vec(v, &[n]).unwrap();
        }
    }
    let mut tape = Tape::new();
    let x = tape.input(Tensor::randn(&[3, 1, 8, 8], 1.0, &mut rng));
    let logits = net.forward(&mut tape, &mut store, x).unwrap();
    let labels: Vec<u32> = (0..3).map(|_| rng.below(10) as u32).collect();
    let loss = tape.cross_entropy(logits, &labels).unwrap();
    (tape, store, loss)
}

fn group_of(store: &ParamStore, group: &str) -> Vec<bool> {
    store.iter().map(|(_, p)| p.group == group).collect()
}

/// The restricted pass against the full one: same bits for the wanted, nothing else, and
/// fewer backend calls.
fn check(full: &Gradients, part: &Gradients, wanted: &[bool], calls: (u64, u64), what: &str) {
    let mut n = 0;
    for (p, t) in full.params() {
        match (wanted[p.index()], part.param(*p)) {
            (true, Some(g)) => {
                let (a, b) = (t.to_vec(), g.to_vec());
                assert!(
                    a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{what}: parameter {} differs",
                    p.index()
                );
                assert!(
                    a.iter().any(|&v| v != 0.0),
                    "{what}: a zero entry proves nothing"
                );
                n += 1;
            }
            (true, None) => panic!("{what}: wanted parameter {} missing", p.index()),
            (false, Some(_)) => panic!("{what}: unwanted parameter {} present", p.index()),
            (false, None) => {}
        }
    }
    assert_eq!(n, part.params().len(), "{what}: every entry checked");
    assert!(n > 0, "{what}: no wanted parameter");
    assert!(
        calls.1 < calls.0,
        "{what}: the restricted pass made {} backend calls, the full one {}",
        calls.1,
        calls.0
    );
    eprintln!(
        "{what}: {n} parameters, {} -> {} backend calls",
        calls.0, calls.1
    );
}

#[test]
fn switch_curvature_alone_equals_the_full_pass() {
    for (space, seed) in [(SearchSpace::bayesnas(), 1), (SearchSpace::darts(), 2)] {
        let name = space.name.clone();
        let (tape, store, loss) = recorded(space, seed);
        let wanted = group_of(&store, SWITCHES);
        let (full, c0) = counters::measure(|| tape.curvature_backward(loss).unwrap());
        let (part, c1) = counters::measure(|| {
            tape.curvature_backward_for(loss, |p| wanted[p.index()])
                .unwrap()
        });
        check(
            &full,
            &part,
            &wanted,
            (c0.launches, c1.launches),
            &format!("{name} curvature"),
        );
    }
}

#[test]
fn weight_gradients_alone_equal_the_full_pass() {
    let (tape, store, loss) = recorded(SearchSpace::bayesnas(), 3);
    let wanted = group_of(&store, WEIGHTS);
    let (full, c0) = counters::measure(|| tape.backward(loss).unwrap());
    let (part, c1) = counters::measure(|| tape.backward_for(loss, |p| wanted[p.index()]).unwrap());
    check(
        &full,
        &part,
        &wanted,
        (c0.launches, c1.launches),
        "weight gradients",
    );
}

/// A parameter the loss does not depend on, or no wanted parameter at all: an empty result,
/// and no work.
#[test]
fn nothing_wanted_nothing_computed() {
    let mut store = ParamStore::new();
    let a = store
        .add(
            "a",
            WEIGHTS,
            Tensor::from_vec(vec![0.3, -1.2], &[2]).unwrap(),
        )
        .unwrap();
    let b = store
        .add(
            "b",
            WEIGHTS,
            Tensor::from_vec(vec![0.7, 2.0], &[2]).unwrap(),
        )
        .unwrap();
    let mut tape = Tape::new();
    let (va, _vb) = (tape.param(&store, a), tape.param(&store, b));
    // loss = 0.5 * sum((2 a)^2): gradient 4 a.
    let twice = tape.scale(va, 2.0).unwrap();
    let loss = tape
        .half_squared_error(twice, &Tensor::zeros(&[2], Device::Cpu).unwrap(), None)
        .unwrap();
    let (g, c) = counters::measure(|| tape.backward_for(loss, |p| p == b).unwrap());
    assert!(g.params().is_empty());
    assert_eq!(c.launches, 1, "only the seed upload");
    let g = tape.backward_for(loss, |p| p == a).unwrap();
    let want: Vec<f32> = vec![4.0 * 0.3, 4.0 * -1.2];
    assert_eq!(g.param(a).unwrap().to_vec(), want);
    assert!(g.param(b).is_none());
}
