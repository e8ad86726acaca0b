//! Random cells of a search space: the baseline a search must beat.
//!
//! A random cell is drawn the way DARTS' random-search baseline draws one: every intermediate
//! node keeps two distinct incoming edges of the space chosen uniformly (all of them when the
//! space gives it two or fewer), each with one operation chosen uniformly among the space's
//! candidates; every node is in the concat. In the `bayesnas` space every node has exactly two
//! incoming edges, so a random cell keeps all eight edges and only the operations are drawn.

use bayesnas_engine::Rng;

use crate::genotype::{CellGenotype, Genotype, KeptEdge, KeptOp};
use crate::space::{CellType, SearchSpace, NUM_INTERMEDIATE};

fn random_cell(space: &SearchSpace, ct: CellType, rng: &mut Rng) -> CellGenotype {
    let mut edges = Vec::new();
    for j in 0..NUM_INTERMEDIATE {
        let mut incoming: Vec<_> = space.edges(ct).iter().filter(|e| e.to == j).collect();
        rng.shuffle(&mut incoming);
        incoming.truncate(2);
        incoming.sort_by_key(|e| e.from);
        for e in incoming {
            let op = space.ops[rng.below(space.ops.len())];
            edges.push(KeptEdge {
                from: e.from,
                to: e.to,
                ops: vec![KeptOp {
                    op,
                    relevance: None,
                }],
            });
        }
    }
    CellGenotype {
        edges,
        concat: (0..NUM_INTERMEDIATE).collect(),
    }
}

/// A random genotype of `space` drawn from `seed` (the same seed gives the same genotype).
pub fn random_genotype(space: &SearchSpace, seed: u64) -> Genotype {
    let mut rng = Rng::new(seed).fork(0x7261_6e64);
    let normal = random_cell(space, CellType::Normal, &mut rng);
    let reduce = random_cell(space, CellType::Reduce, &mut rng);
    Genotype {
        space: space.name.clone(),
        normal,
        reduce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_genotypes_are_valid_seeded_and_varied() {
        for space in [SearchSpace::bayesnas(), SearchSpace::darts()] {
            let a = random_genotype(&space, 1);
            a.validate().unwrap();
            assert_eq!(a, random_genotype(&space, 1));
            for cell in [&a.normal, &a.reduce] {
                for j in 0..NUM_INTERMEDIATE {
                    assert_eq!(cell.edges.iter().filter(|e| e.to == j).count(), 2);
                }
                assert!(cell.edges.iter().all(|e| e.ops.len() == 1));
            }
            // over 20 seeds every op shows up and the genotypes differ
            let gs: Vec<Genotype> = (0..20).map(|s| random_genotype(&space, s)).collect();
            for op in &space.ops {
                assert!(gs
                    .iter()
                    .any(|g| g.normal.edges.iter().any(|e| e.ops[0].op == *op)));
            }
            assert!(gs.windows(2).any(|w| w[0] != w[1]));
            if space.name == "darts" {
                // node n3 has 5 candidate inputs: several different pairs are drawn
                let pairs: std::collections::BTreeSet<Vec<String>> = gs
                    .iter()
                    .map(|g| {
                        g.normal
                            .edges
                            .iter()
                            .filter(|e| e.to == 3)
                            .map(|e| e.from.to_string())
                            .collect()
                    })
                    .collect();
                assert!(pairs.len() >= 3, "{pairs:?}");
            }
        }
    }
}
