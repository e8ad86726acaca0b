//! Helpers shared by the integration tests.

use bayesnas_engine::prelude::*;
use bayesnas_search::searcher::{SearchSettings, Searcher};
use bayesnas_search::supernet::{Supernet, SupernetConfig};
use bayesnas_search::SearchSpace;

/// A searcher over the supernet of `config`, initialised from seed 5, with `settings`.
pub fn searcher(config: SupernetConfig, settings: SearchSettings) -> Searcher {
    let mut store = ParamStore::new();
    let net = Supernet::new(config, &mut store, &mut Rng::new(5)).unwrap();
    Searcher::new(net, store, settings).unwrap()
}

/// A searcher over a small supernet of `space` (10 classes, square `image`-pixel inputs with
/// `in_channels` channels), with the default settings and their seed set to `seed`.
#[allow(dead_code)]
pub fn small_searcher(
    space: SearchSpace,
    channels: usize,
    cells: usize,
    in_channels: usize,
    image: usize,
    seed: u64,
) -> Searcher {
    let config = SupernetConfig {
        space,
        channels,
        cells,
        in_channels,
        image,
        classes: 10,
    };
    let settings = SearchSettings {
        seed,
        ..SearchSettings::default()
    };
    searcher(config, settings)
}
