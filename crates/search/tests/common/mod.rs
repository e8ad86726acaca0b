//! Helpers shared by the integration tests.

use bayesnas_engine::prelude::*;
use bayesnas_search::searcher::{SearchSettings, Searcher};
use bayesnas_search::supernet::{Supernet, SupernetConfig};

/// A searcher over the supernet of `config`, initialised from seed 5, with `settings`.
pub fn searcher(config: SupernetConfig, settings: SearchSettings) -> Searcher {
    let mut store = ParamStore::new();
    let net = Supernet::new(config, &mut store, &mut Rng::new(5)).unwrap();
    Searcher::new(net, store, settings).unwrap()
}
