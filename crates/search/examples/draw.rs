//! Draws both cells of a genotype as SVG and DOT files.
//!
//! ```text
//! cargo run -p bayesnas-search --example draw -- GENOTYPE OUT_DIR
//! ```
//!
//! `GENOTYPE` is a path to a `genotype.json`, a DARTS `Genotype(...)` string, or `DARTS_V2`.
//! Writes `OUT_DIR/{normal,reduce}.{svg,dot}`.

use std::path::Path;
use std::process::ExitCode;

use bayesnas_search::draw::{to_dot, to_svg};
use bayesnas_search::genotype::{Genotype, DARTS_V2};
use bayesnas_search::CellType;

fn run(arg: &str, out: &Path) -> Result<(), String> {
    let genotype = if arg == "DARTS_V2" {
        Genotype::from_darts_string(DARTS_V2).map_err(|e| e.to_string())?
    } else if arg.trim_start().starts_with("Genotype") {
        Genotype::from_darts_string(arg).map_err(|e| e.to_string())?
    } else {
        let text = std::fs::read_to_string(arg).map_err(|e| format!("{arg}: {e}"))?;
        Genotype::from_json(&text).map_err(|e| format!("{arg}: {e}"))?
    };
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    for ct in CellType::ALL {
        let title = format!("{} cell ({})", ct, genotype.space);
        let cell = genotype.cell(ct);
        for (ext, text) in [("svg", to_svg(cell, &title)), ("dot", to_dot(cell, &title))] {
            let path = out.join(format!("{ct}.{ext}"));
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 {
        eprintln!(
            "usage: draw GENOTYPE OUT_DIR   (GENOTYPE: genotype.json, a DARTS string, or DARTS_V2)"
        );
        return ExitCode::from(2);
    }
    match run(&args[0], Path::new(&args[1])) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
