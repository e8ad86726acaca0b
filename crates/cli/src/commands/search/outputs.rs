//! What `bayesnas search` writes and prints after the run: `selection.json`, the heat map and
//! drawings of each cell, and the summary on stdout.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bayesnas_search::derive::{CellRelevance, CellRules};
use bayesnas_search::heatmap::{heatmap_svg, HeatScale};
use bayesnas_search::searcher::{EpochRecord, CHECKPOINT};
use bayesnas_search::{draw, CellGenotype, Genotype};

use super::DeriveArg;
use crate::error::{CliError, CliResult};

/// `selection.json`: the scores the derivation ranked, per cell type and edge.
pub(super) fn selection_json(
    score: &str,
    derive: DeriveArg,
    rules: CellRules,
    cells: &[(&str, &CellRelevance)],
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "format": "bayesnas-selection",
        "version": 1,
        "score": score,
        "derive": derive,
        "rules": rules,
        "ops": cells.first().map(|(_, r)| r.ops.iter().map(|o| o.name()).collect::<Vec<_>>()),
    });
    for (name, rel) in cells {
        let edges: Vec<serde_json::Value> = rel
            .edges
            .iter()
            .enumerate()
            .map(|(e, edge)| {
                serde_json::json!({
                    "from": edge.from.to_string(),
                    "to": format!("n{}", edge.to),
                    "edge_score": rel.gamma0[e],
                    "op_scores": rel.gamma_tilde[e],
                })
            })
            .collect();
        v[*name] = serde_json::json!({ "edges": edges });
    }
    v
}

/// `{name}_relevance.svg` (the heat map of the scores `rel`, kept ops framed), `{name}.svg` and
/// `{name}.dot` (the drawings of `cell`), each through `write`.
pub(super) fn write_cell_pictures(
    write: &dyn Fn(&str, &str) -> CliResult<PathBuf>,
    name: &str,
    cell: &CellGenotype,
    rel: &CellRelevance,
    score_name: &str,
) -> CliResult<()> {
    let rows: Vec<String> = rel
        .edges
        .iter()
        .map(|e| format!("{} -> n{}", e.from, e.to))
        .collect();
    let cols: Vec<String> = rel.ops.iter().map(|o| o.name().to_string()).collect();
    let kept: Vec<Vec<bool>> = rel
        .edges
        .iter()
        .map(|e| {
            rel.ops
                .iter()
                .map(|op| {
                    cell.edges.iter().any(|k| {
                        k.from == e.from && k.to == e.to && k.ops.iter().any(|o| o.op == *op)
                    })
                })
                .collect()
        })
        .collect();
    let caption = match score_name {
        "gamma_tilde" => "gamma_tilde (effective prior variance of each op's switch); framed: kept",
        _ => "rise of the held-out loss when the op's switch is set to 0; framed: kept",
    };
    let svg = heatmap_svg(
        &format!("{name} cell: {score_name}"),
        &rows,
        &cols,
        &rel.gamma_tilde,
        &kept,
        caption,
        HeatScale::Global,
    )
    .map_err(|e| CliError::Usage(format!("relevance heat map: {e}")))?;
    write(&format!("{name}_relevance.svg"), &svg)?;
    write(
        &format!("{name}.svg"),
        &draw::to_svg(cell, &format!("{name} cell")),
    )?;
    write(
        &format!("{name}.dot"),
        &draw::to_dot(cell, &format!("{name} cell")),
    )?;
    Ok(())
}

/// The summary on stdout: time, the supernet's validation accuracy, both cells, the DARTS
/// string and the output files.
pub(super) fn print_summary(
    out: &Path,
    start: Instant,
    last: Option<&EpochRecord>,
    genotype: &Genotype,
    perturb: bool,
) {
    println!(
        "BayesNAS search finished in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    if let Some(h) = last {
        println!(
            "validation accuracy of the supernet: {:.2}% (loss {:.4})",
            100.0 * h.val_accuracy,
            h.val_loss
        );
    }
    for (name, cell) in [("normal", &genotype.normal), ("reduce", &genotype.reduce)] {
        println!(
            "{name} cell (concat {:?}):",
            cell.concat
                .iter()
                .map(|i| format!("n{i}"))
                .collect::<Vec<_>>()
        );
        for e in &cell.edges {
            let ops: Vec<String> = e
                .ops
                .iter()
                .map(|o| match o.relevance {
                    Some(rel) => format!("{} ({rel:.3})", o.op.name()),
                    None => o.op.name().to_string(),
                })
                .collect();
            println!("  {} -> n{}: {}", e.from, e.to, ops.join(", "));
        }
    }
    match genotype.to_darts_string() {
        Some(s) => println!("DARTS genotype: {s}"),
        None => println!("(the cell keeps several ops per node: no DARTS genotype string; use --derive darts for one)"),
    }
    println!(
        "outputs in {}: genotype.json relevance.json selection.json{} normal.svg reduce.svg normal_relevance.svg reduce_relevance.svg normal.dot reduce.dot metrics.jsonl {CHECKPOINT}",
        out.display(),
        if perturb { " perturbation.json" } else { "" }
    );
}
