//! Quick supernet step timing without the CLI: `cargo run --release -p bayesnas-search
//! --example bench_step -- C CELLS BATCH IMAGE IN_CHANNELS STEPS`.
use bayesnas_search::bench::bench_step;
use bayesnas_search::supernet::SupernetConfig;
use bayesnas_search::SearchSpace;

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("numbers"))
        .collect();
    let get = |i: usize, d: usize| a.get(i).copied().unwrap_or(d);
    let cfg = SupernetConfig {
        space: SearchSpace::bayesnas(),
        channels: get(0, 16),
        cells: get(1, 8),
        in_channels: get(4, 3),
        image: get(3, 32),
        classes: 10,
    };
    let r = bench_step(cfg, get(2, 32), get(5, 3), 1, 0).expect("bench");
    println!("{}", serde_json::to_string(&r).unwrap());
}
