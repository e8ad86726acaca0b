//! `bayesnas search`: BayesNAS on a supernet, from data to a derived cell.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bayesnas_data::{Augment, Dataset, Loader, LoaderConfig, SearchSplits, SplitConfig};
use bayesnas_engine::io::write_atomic;
use bayesnas_engine::prelude::*;
use bayesnas_search::curvature::CurvatureEstimator;
use bayesnas_search::derive::{derive_from, CellRules, NodeRepair, OpScope};
use bayesnas_search::perturb::{PerturbBn, PerturbMode, PerturbOptions, PerturbationScores};
use bayesnas_search::searcher::{
    CurvatureScale, DataFeed, Event, Phase, SearchSettings, Searcher, SplitKind, CHECKPOINT,
};
use bayesnas_search::space::CellType;
use bayesnas_search::supernet::{Supernet, SupernetConfig, SWITCHES, WEIGHTS};
use bayesnas_search::{DeriveRule, RelevanceReport, SearchSpace};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::data::SearchFeed;
use crate::error::{CliError, CliResult};
use crate::opts::{
    check_at_least_one, check_batch_norm_batch, check_cells, check_channels, check_max_batches,
    check_positive, check_unit_interval, usage, CommonOpts, SgdOpts,
};
use crate::progress::Progress;

mod outputs;

use outputs::{print_summary, selection_json, write_cell_pictures};

/// `--derive` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeriveArg {
    /// BayesNAS: keep ops whose relevance is at least tau times the largest, drop edges whose
    /// parent relevance is under tau times the largest, then repair the cell
    Threshold,
    /// DARTS: the two most relevant incoming edges per node, one op each
    Darts,
    /// Perturbation (Wang et al. 2021): on the trained supernet, each op's switch is set to 0
    /// in turn and the rise of the held-out loss ranks the ops; then the DARTS cell rule
    /// (two incoming edges per node ranked by their best op, one op each)
    Perturb,
}

/// `--perturb-mode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PerturbModeArg {
    /// Wang et al.: the rise of the held-out loss when the op's switch is set to 0
    Remove,
    /// The op alone replaces its edge's mixture (the other ops' switches 0, its own their
    /// sum): ops rank by that held-out loss, edges by the rise when the edge is removed
    Replace,
}

/// `--perturb-bn` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PerturbBnArg {
    /// The supernet's running statistics (evaluation mode), as Wang et al.
    Running,
    /// Each held-out batch's own statistics (training-mode batch norm; the running
    /// statistics are restored): a removal's change of scale is normalised away
    Batch,
}

/// `--curvature-scale` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CurvatureScaleArg {
    /// The curvature of the batch-mean loss (one average image)
    Mean,
    /// Times the batch size (the authors' batch-sum seed)
    BatchSum,
    /// Times the images of a switch epoch: the Laplace approximation of the posterior given
    /// the whole switch split
    Dataset,
}

/// `--curvature-estimator` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EstimatorArg {
    /// The diagonal Gauss-Newton recursion of the engine (method note)
    Recursion,
    /// Monte-Carlo Fisher: labels sampled from the model, per-sample squared switch gradients
    McFisher,
    /// The per-switch Gauss-Newton diagonal from one backward pass per class
    Ggn,
}

/// `--op-scope` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OpScopeArg {
    /// An op's relevance relative to the largest of its cell type (method note)
    Cell,
    /// Relative to the best op of its own edge
    Edge,
}

/// `--node-repair` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NodeRepairArg {
    /// A node that lost every input is removed (method note)
    Remove,
    /// A node that lost every input keeps its strongest incoming edge
    KeepBestInput,
}

/// `--preset` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// The authors' CIFAR-10 settings and the method note's derivation: C=36, 8 cells, batch
    /// 18, SGD lr 0.1 for weights and switches, momentum 0.9, weight decay 1e-4, lambda 0.005,
    /// one warm-up and one switch epoch, one round, threshold rule, no parameter-free cap
    Paper,
}

/// Options of `bayesnas search`.
#[derive(Args, Debug, Clone)]
#[command(
    mut_arg("momentum", |a| a.help("Momentum of weights and switches")),
    mut_arg("weight_decay", |a| a.help(
        "Weight decay of the weights (switches get none) [default: 3e-4; paper: 1e-4]"
    ))
)]
pub struct SearchArgs {
    #[command(flatten)]
    pub common: CommonOpts,

    /// Search space: `bayesnas` (8 edges per cell, the authors') or `darts` (14 edges)
    #[arg(
        long,
        default_value = "bayesnas",
        value_name = "NAME",
        help_heading = "Supernet"
    )]
    pub space: String,
    /// Channels of the first stage (doubled at each reduction) [default: 8; paper: 36]
    #[arg(long, value_name = "C", help_heading = "Supernet")]
    pub channels: Option<usize>,
    /// Number of cells; reductions at 1/3 and 2/3 of the depth [default: 5; paper: 8]
    #[arg(long, value_name = "N", help_heading = "Supernet")]
    pub cells: Option<usize>,
    /// Settings preset; explicit options override it
    #[arg(long, value_enum, help_heading = "Supernet")]
    pub preset: Option<PresetArg>,

    /// Images per batch [default: 64; paper: 18]
    #[arg(long, value_name = "B", help_heading = "Training")]
    pub batch: Option<usize>,
    /// Learning rate of the weights, cosine-annealed [default: 0.025; paper: 0.1]
    #[arg(long, value_name = "LR", help_heading = "Training")]
    pub lr: Option<f32>,
    /// `--momentum` (of weights and switches), `--weight-decay` (of the weights).
    #[command(flatten)]
    pub sgd: SgdOpts,
    /// Learning rate of the switches (constant) [default: 0.01; paper: the weights' 0.1]
    #[arg(long, value_name = "LR", help_heading = "Training")]
    pub switch_lr: Option<f32>,
    /// Weights-only warm-up epochs on the weight split
    #[arg(long, default_value_t = 1, value_name = "N", help_heading = "Training")]
    pub warmup_epochs: usize,
    /// Weights-only warm-up of N optimizer steps instead of --warmup-epochs (the weight split
    /// is repeated, each pass in a new order)
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub warmup_steps: Option<usize>,
    /// Dropout probability on the outputs of parameter-free ops (pools, identity) during
    /// switch epochs, a handicap against the collapse to them (0: off)
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "P",
        help_heading = "Training"
    )]
    pub param_free_dropout: f32,
    /// Switch epochs per round on the switch split
    #[arg(long, default_value_t = 1, value_name = "N", help_heading = "Training")]
    pub switch_epochs: usize,
    /// Cap on batches per epoch (quick runs); all batches by default
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub max_batches: Option<usize>,
    /// Fraction of the training data held out for validation
    #[arg(
        long,
        default_value_t = 0.1,
        value_name = "F",
        help_heading = "Training"
    )]
    pub valid_fraction: f64,
    /// Fraction of the rest used for the weights-only warm-up (the remainder trains switches)
    #[arg(
        long,
        default_value_t = 0.1,
        value_name = "F",
        help_heading = "Training"
    )]
    pub weight_fraction: f64,
    /// Cutout length in pixels (0: off)
    #[arg(
        long,
        default_value_t = 0,
        value_name = "PX",
        help_heading = "Training"
    )]
    pub cutout: usize,

    /// Group-lasso strength for every group [default: 0.01; paper: 0.005]
    #[arg(long, value_name = "L", help_heading = "Bayesian update")]
    pub lambda: Option<f64>,
    /// Group-lasso strength of parent (edge) groups; overrides --lambda
    #[arg(long, value_name = "L", help_heading = "Bayesian update")]
    pub lambda_parent: Option<f64>,
    /// Group-lasso strength of child (operation) groups; overrides --lambda
    #[arg(long, value_name = "L", help_heading = "Bayesian update")]
    pub lambda_child: Option<f64>,
    /// Curvature is averaged over the last K batches of each round's switch training
    #[arg(
        long,
        default_value_t = 8,
        value_name = "K",
        help_heading = "Bayesian update"
    )]
    pub curvature_batches: usize,
    /// Scale of the curvature in the Laplace approximation
    #[arg(long, value_enum, default_value_t = CurvatureScaleArg::Mean, help_heading = "Bayesian update")]
    pub curvature_scale: CurvatureScaleArg,
    /// How the switch curvature is estimated
    #[arg(long, value_enum, default_value_t = EstimatorArg::Recursion, help_heading = "Bayesian update")]
    pub curvature_estimator: EstimatorArg,
    /// Rounds of (switch epochs, closed-form update); 1 is the paper's protocol
    #[arg(
        long,
        default_value_t = 1,
        value_name = "T",
        help_heading = "Bayesian update"
    )]
    pub rounds: usize,

    /// How the cell is read off the trained supernet [default: perturb; paper: threshold]
    #[arg(long, value_enum, help_heading = "Derivation")]
    pub derive: Option<DeriveArg>,
    /// Threshold of the threshold rule, relative to the most relevant op/edge (0..1)
    #[arg(
        long,
        default_value_t = 0.5,
        value_name = "TAU",
        help_heading = "Derivation"
    )]
    pub tau: f64,
    /// What the threshold rule compares an op's relevance with
    #[arg(long, value_enum, default_value_t = OpScopeArg::Cell, help_heading = "Derivation")]
    pub op_scope: OpScopeArg,
    /// What happens to an intermediate node that lost every input
    #[arg(long, value_enum, default_value_t = NodeRepairArg::Remove, help_heading = "Derivation")]
    pub node_repair: NodeRepairArg,
    /// At most N parameter-free ops (pools, skip) in the normal cell, P-DARTS style; the
    /// cheapest edges switch to their best parametric op; `none`: no cap [default: 4 with
    /// --derive perturb (measured in docs/search-quality.md), none with the other rules and
    /// with --preset paper]
    #[arg(long, value_name = "N|none", value_parser = parse_cap, help_heading = "Derivation")]
    pub max_param_free: Option<Cap>,
    /// Held-out images of --derive perturb (the first N of the validation split; 384 gave
    /// steadier and better cells than 128 in docs/search-quality.md)
    #[arg(
        long,
        default_value_t = 384,
        value_name = "N",
        help_heading = "Derivation"
    )]
    pub perturb_images: usize,
    /// How --derive perturb measures an op
    #[arg(long, value_enum, default_value_t = PerturbModeArg::Remove, help_heading = "Derivation")]
    pub perturb_mode: PerturbModeArg,

    /// Batch-norm statistics of --derive perturb's held-out evaluations
    #[arg(long, value_enum, default_value_t = PerturbBnArg::Running, help_heading = "Derivation")]
    pub perturb_bn: PerturbBnArg,
    /// --derive perturb: an op whose removal rise is within Z standard errors (over the
    /// held-out images) of a costlier op's takes that op's rank, so the cheapest of the ops
    /// the held-out set cannot tell apart is kept (cost: parameter count); `none`: plain rises
    /// [default: 2 with --derive perturb --perturb-mode remove (measured in
    /// docs/search-quality.md), none otherwise and with --preset paper]
    #[arg(long, value_name = "Z|none", value_parser = parse_width, help_heading = "Derivation")]
    pub cheaper_within: Option<Width>,

    /// Continue the run whose outputs and checkpoint are in DIR (same options). A finished
    /// run only derives its cell again, with the derivation options given; its
    /// perturbation.json is reused when it was measured on this supernet and held-out set
    #[arg(long, value_name = "DIR", help_heading = "Runtime")]
    pub resume: Option<PathBuf>,
}

/// A `--max-param-free` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap(Option<usize>);

fn parse_cap(s: &str) -> std::result::Result<Cap, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Cap(None));
    }
    s.parse()
        .map(|n| Cap(Some(n)))
        .map_err(|_| format!("'{s}' is neither a count nor 'none'"))
}

/// A `--cheaper-within` value: a number of standard errors, or `none`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Width(Option<f64>);

fn parse_width(s: &str) -> std::result::Result<Width, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Width(None));
    }
    match s.parse::<f64>() {
        Ok(z) if z.is_finite() && z >= 0.0 => Ok(Width(Some(z))),
        _ => Err(format!(
            "'{s}' is neither a number of standard errors >= 0 nor 'none'"
        )),
    }
}

/// Defaults of the derivation outside `--preset paper` (docs/search-quality.md has the
/// measurements behind them).
const DEFAULT_DERIVE: DeriveArg = DeriveArg::Perturb;
/// The parameter-free cap of `--derive perturb` when `--max-param-free` is not given (P7 in
/// docs/search-quality.md); the other rules have no cap unless it is given.
const DEFAULT_PERTURB_MAX_PARAM_FREE: Option<usize> = Some(4);
/// The tie width of `--derive perturb --perturb-mode remove` when `--cheaper-within` is not
/// given (P9 in docs/search-quality.md), in standard errors; none with `--preset paper`.
const DEFAULT_PERTURB_CHEAPER_WITHIN: Option<f64> = Some(2.0);

/// The resolved settings (preset + explicit options).
#[derive(Debug, Clone, Serialize)]
struct Resolved {
    channels: usize,
    cells: usize,
    batch: usize,
    lr: f32,
    weight_decay: f32,
    lambda_parent: f64,
    lambda_child: f64,
    switch_lr: f32,
    derive: DeriveArg,
    max_param_free: Option<usize>,
    cheaper_within: Option<f64>,
}

impl SearchArgs {
    fn resolve(&self) -> CliResult<Resolved> {
        let paper = self.preset == Some(PresetArg::Paper);
        let pick = |v: Option<f64>, paper_v: f64, default: f64| {
            v.unwrap_or(if paper { paper_v } else { default })
        };
        let lambda = pick(self.lambda, 0.005, 0.01);
        let derive = self.derive.unwrap_or(if paper {
            DeriveArg::Threshold
        } else {
            DEFAULT_DERIVE
        });
        // `--cheaper-within` reads the standard errors of removal scores only.
        let removal_scores =
            derive == DeriveArg::Perturb && self.perturb_mode == PerturbModeArg::Remove;
        let r = Resolved {
            channels: self.channels.unwrap_or(if paper { 36 } else { 8 }),
            cells: self.cells.unwrap_or(if paper { 8 } else { 5 }),
            batch: self.batch.unwrap_or(if paper { 18 } else { 64 }),
            lr: self.lr.unwrap_or(if paper { 0.1 } else { 0.025 }),
            weight_decay: self.sgd.weight_decay_or(if paper { 1e-4 } else { 3e-4 }),
            lambda_parent: self.lambda_parent.unwrap_or(lambda),
            lambda_child: self.lambda_child.unwrap_or(lambda),
            switch_lr: self.switch_lr.unwrap_or(if paper { 0.1 } else { 0.01 }),
            derive,
            max_param_free: match self.max_param_free {
                Some(Cap(c)) => c,
                None if paper || derive != DeriveArg::Perturb => None,
                None => DEFAULT_PERTURB_MAX_PARAM_FREE,
            },
            cheaper_within: match self.cheaper_within {
                Some(Width(z)) => z,
                None if paper || !removal_scores => None,
                None => DEFAULT_PERTURB_CHEAPER_WITHIN,
            },
        };
        if self.cheaper_within.is_some_and(|Width(z)| z.is_some()) && !removal_scores {
            return usage(
                "--cheaper-within needs --derive perturb with --perturb-mode remove".into(),
            );
        }
        check_channels(r.channels)?;
        check_cells(r.cells)?;
        check_batch_norm_batch(r.batch)?;
        if !(0.0..=1.0).contains(&self.tau) {
            return usage(format!("--tau {}: must be between 0 and 1", self.tau));
        }
        check_max_batches(self.max_batches)?;
        check_positive("--switch-lr", r.switch_lr)?;
        if self.warmup_steps == Some(0) {
            return usage("--warmup-steps 0: must be at least 1 (or --warmup-epochs 0)".into());
        }
        check_unit_interval("--param-free-dropout", self.param_free_dropout)?;
        check_at_least_one("--perturb-images", self.perturb_images)?;
        if self.curvature_batches == 0 || self.rounds == 0 || self.switch_epochs == 0 {
            return usage(
                "--curvature-batches, --rounds and --switch-epochs must be at least 1".into(),
            );
        }
        if self.resume.is_some()
            && self
                .common
                .runtime
                .out
                .as_ref()
                .is_some_and(|o| Some(o) != self.resume.as_ref())
        {
            return usage(
                "--resume DIR continues in DIR: do not also give a different --out".into(),
            );
        }
        Ok(r)
    }
}

/// Runs `bayesnas search`.
pub fn run(args: &SearchArgs) -> CliResult<()> {
    let r = args.resolve()?;
    let space =
        SearchSpace::by_name(&args.space).map_err(|e| CliError::Usage(format!("--space: {e}")))?;
    let (rt, source) = args.common.setup()?;

    let out = args
        .resume
        .clone()
        .or_else(|| rt.out.clone())
        .unwrap_or_else(|| PathBuf::from("runs/search"));
    std::fs::create_dir_all(&out).map_err(CliError::io(&out))?;
    let quiet = rt.quiet;

    // data: seeded disjoint splits of the training data
    let ds: Arc<Dataset> = Arc::clone(&source.train);
    let [in_c, image, _] = ds.image_shape();
    let splits = SearchSplits::of(
        &ds,
        SplitConfig {
            valid_fraction: args.valid_fraction,
            weight_fraction: args.weight_fraction,
        },
        rt.seed,
    )?;
    let mut augment: Augment = source.kind.default_augment();
    augment.cutout = args.cutout;
    let feed_cfg =
        |seed_stream: u64| LoaderConfig::train(r.batch, augment, rt.seed.wrapping_add(seed_stream));
    let mut feed = SearchFeed {
        weight: Loader::new(Arc::clone(&ds), splits.weight.clone(), feed_cfg(1))?,
        switch: Loader::new(Arc::clone(&ds), splits.switch.clone(), feed_cfg(2))?,
        valid: Loader::new(
            Arc::clone(&ds),
            splits.valid.clone(),
            LoaderConfig::eval(r.batch.max(64)),
        )?,
        max_batches: args.max_batches,
    };
    for (name, split) in [
        ("weight", SplitKind::Weights),
        ("switch", SplitKind::Switches),
        ("validation", SplitKind::Validation),
    ] {
        if feed.batches(split) == 0 {
            return Err(CliError::Usage(format!(
                "the {name} split has no complete batch of {} images: lower --batch or change the split fractions",
                r.batch
            )));
        }
    }

    // network and searcher
    let config = SupernetConfig {
        space,
        channels: r.channels,
        cells: r.cells,
        in_channels: in_c,
        image,
        classes: ds.num_classes(),
    };
    let mut store = ParamStore::new();
    let mut rng = Rng::new(rt.seed);
    let net = Supernet::new(config, &mut store, &mut rng)?;
    let (params, switches) = (store.count(Some(WEIGHTS)), store.count(Some(SWITCHES)));
    let settings = SearchSettings {
        weights_lr: r.lr,
        weights_momentum: args.sgd.momentum,
        weights_decay: r.weight_decay,
        switches_lr: r.switch_lr,
        switches_momentum: args.sgd.momentum,
        lambda_parent: r.lambda_parent,
        lambda_child: r.lambda_child,
        warmup_epochs: args.warmup_epochs,
        switch_epochs: args.switch_epochs,
        rounds: args.rounds,
        curvature_batches: args.curvature_batches,
        grad_clip: 5.0,
        seed: rt.seed,
        warmup_steps: args.warmup_steps,
        curvature_scale: match args.curvature_scale {
            CurvatureScaleArg::Mean => CurvatureScale::Mean,
            CurvatureScaleArg::BatchSum => CurvatureScale::BatchSum,
            CurvatureScaleArg::Dataset => CurvatureScale::Dataset,
        },
        param_free_dropout: args.param_free_dropout,
        curvature_estimator: match args.curvature_estimator {
            EstimatorArg::Recursion => CurvatureEstimator::Recursion,
            EstimatorArg::McFisher => CurvatureEstimator::McFisher,
            EstimatorArg::Ggn => CurvatureEstimator::Ggn,
        },
    };
    let mut searcher = Searcher::new(net, store, settings)?;
    // Parameters (and so every step) on the selected device; checkpoints load onto it.
    searcher.to_device(rt.device)?;
    if let Some(dir) = &args.resume {
        let ck = dir.join(CHECKPOINT);
        if !ck.is_file() {
            return Err(CliError::Usage(format!(
                "--resume {}: no {CHECKPOINT} there",
                dir.display()
            )));
        }
        searcher.load_checkpoint(&ck)?;
        if !quiet {
            eprintln!(
                "resuming {} after epoch {}",
                dir.display(),
                searcher.epochs_done
            );
        }
    }
    if !quiet {
        eprintln!(
            "supernet: space {}, C={}, {} cells, {} weights, {} switches; {} threads; data {} ({} weight / {} switch / {} validation images)",
            args.space, r.channels, r.cells, params, switches, rt.threads, source.kind.display_name(),
            splits.weight.len(), splits.switch.len(), splits.valid.len()
        );
    }

    let mut metrics = crate::metrics::MetricsWriter::create(&out).map_err(CliError::io(&out))?;
    metrics
        .record("search_start", &serde_json::json!({ "resolved": r, "params": params, "switches": switches, "space": args.space, "seed": rt.seed, "threads": rt.threads }))
        .map_err(CliError::io(&out))?;
    let mut bar: Option<Progress> = None;
    let mut last_images = 0usize;
    let mut io_error: Option<CliError> = None;
    let mut observe = |e: Event| {
        let rec = match &e {
            Event::EpochStart {
                epoch,
                epochs,
                phase,
                round,
                batches,
            } => {
                let label = match phase {
                    Phase::Warmup => "warm-up".to_string(),
                    Phase::Switch => format!("switch r{round}"),
                };
                bar = Some(Progress::new(
                    *batches as u64,
                    &format!("{}/{} {label}", epoch + 1, epochs),
                    quiet,
                ));
                last_images = 0;
                None
            }
            Event::Step {
                step,
                loss,
                accuracy,
                ..
            } => {
                if let Some(b) = bar.as_mut() {
                    let images = step * r.batch;
                    b.step(images - last_images, Some(*loss), Some(*accuracy));
                    last_images = images;
                }
                None
            }
            Event::Validating { .. } => None,
            Event::EpochEnd(rec) => {
                if let Some(b) = bar.take() {
                    b.finish();
                }
                if !quiet {
                    eprintln!(
                        "epoch {} ({:?}, round {}): train loss {:.4} acc {:.2}%, validation loss {:.4} acc {:.2}%, {:.0} img/s",
                        rec.epoch + 1, rec.phase, rec.round, rec.train_loss, 100.0 * rec.train_accuracy, rec.val_loss, 100.0 * rec.val_accuracy, rec.images_per_s
                    );
                }
                Some(("epoch", serde_json::to_value(rec).unwrap_or_default()))
            }
            Event::Update { round, summary } => Some((
                "update",
                serde_json::json!({ "round": round, "summary": format!("{summary:?}") }),
            )),
        };
        if let Some((event, value)) = rec {
            if let Err(err) = metrics.record(event, &value) {
                io_error.get_or_insert(CliError::io(out.join(crate::metrics::FILE_NAME))(err));
            }
        }
    };
    let start = Instant::now();
    let result = searcher.run(&mut feed, Some(&out), &mut observe);
    if let Some(b) = bar.take() {
        b.clear();
    }
    result?;
    if let Some(e) = io_error {
        return Err(e);
    }

    // outputs
    let write = |name: &str, text: &str| -> CliResult<PathBuf> {
        let p = out.join(name);
        write_atomic(&p, text.as_bytes())?;
        Ok(p)
    };
    let rules = CellRules {
        op_scope: match args.op_scope {
            OpScopeArg::Cell => OpScope::Cell,
            OpScopeArg::Edge => OpScope::Edge,
        },
        node_repair: match args.node_repair {
            NodeRepairArg::Remove => NodeRepair::Remove,
            NodeRepairArg::KeepBestInput => NodeRepair::KeepBestInput,
        },
        max_param_free: r.max_param_free,
    };
    let derive_arg = r.derive;
    // (rule, score name, the scores as reported, the scores as the derivation reads them)
    let (rule, score_name, [normal_rel, reduce_rel], [normal_in, reduce_in]) = match derive_arg {
        DeriveArg::Threshold | DeriveArg::Darts => {
            let rel = CellType::ALL.map(|ct| searcher.prior.cell_relevance(ct));
            (
                if derive_arg == DeriveArg::Darts {
                    DeriveRule::Darts
                } else {
                    DeriveRule::Threshold { tau: args.tau }
                },
                "gamma_tilde",
                rel.clone(),
                rel,
            )
        }
        DeriveArg::Perturb => {
            let t0 = Instant::now();
            let mut pbar: Option<Progress> = None;
            let mode = match args.perturb_mode {
                PerturbModeArg::Remove => PerturbMode::Remove,
                PerturbModeArg::Replace => PerturbMode::Replace,
            };
            // A resumed run keeps the scores it measured on this supernet (checked by
            // `perturbation_scores_with`), so re-deriving with other cell rules is quick.
            let previous = args
                .resume
                .as_ref()
                .and_then(|dir| previous_scores(&dir.join("perturbation.json")));
            let opts = PerturbOptions {
                images: args.perturb_images,
                mode,
                bn: match args.perturb_bn {
                    PerturbBnArg::Running => PerturbBn::Running,
                    PerturbBnArg::Batch => PerturbBn::Batch,
                },
                standard_errors: r.cheaper_within.is_some(),
            };
            let (scores, reused) = searcher.perturbation_scores_with(
                &mut feed,
                opts,
                previous.as_ref(),
                &mut |done, total| {
                    let b = pbar
                        .get_or_insert_with(|| Progress::new(total as u64, "perturbation", quiet));
                    b.set_position(done as u64);
                },
            )?;
            if let Some(b) = pbar.take() {
                b.finish();
            }
            if !quiet {
                eprintln!(
                    "perturbation scores: {} held-out images, base loss {:.4}, {:.1} s{}",
                    scores.images,
                    scores.base_loss,
                    t0.elapsed().as_secs_f64(),
                    if reused {
                        " (reused: measured before on this supernet)"
                    } else {
                        ""
                    }
                );
            }
            write(
                "perturbation.json",
                &serde_json::to_string_pretty(&scores)
                    .map_err(|e| CliError::Usage(e.to_string()))?,
            )?;
            (
                DeriveRule::Darts,
                "perturbation_loss_rise",
                CellType::ALL.map(|ct| scores.raw_relevance(&searcher.prior, ct)),
                match r.cheaper_within {
                    None => CellType::ALL.map(|ct| scores.cell_relevance(&searcher.prior, ct)),
                    Some(z) => {
                        let [n, rd] = CellType::ALL.map(|ct| {
                            scores.cheaper_within(&searcher.prior, ct, z, &searcher.op_costs(ct))
                        });
                        [n?, rd?]
                    }
                },
            )
        }
    };
    let derivation = derive_from(searcher.prior.space(), &normal_in, &reduce_in, rule, rules)
        .map_err(bayesnas_search::Error::from)?;
    let genotype = derivation.genotype;
    write(
        "genotype.json",
        &genotype.to_json().map_err(bayesnas_search::Error::from)?,
    )?;
    let mut report = RelevanceReport::from_prior(&searcher.prior);
    report
        .set_network_layout(r.cells)
        .map_err(bayesnas_search::Error::from)?;
    write(
        "relevance.json",
        &report.to_json().map_err(bayesnas_search::Error::from)?,
    )?;
    let mut selection = selection_json(
        score_name,
        derive_arg,
        rules,
        &[("normal", &normal_rel), ("reduce", &reduce_rel)],
    );
    // How the perturbation rises were read: null = plainly, Z = cheaper ops within Z
    // standard errors take the rank of costlier ones.
    selection["cheaper_within"] = serde_json::json!(r.cheaper_within);
    write(
        "selection.json",
        &serde_json::to_string_pretty(&selection).map_err(|e| CliError::Usage(e.to_string()))?,
    )?;
    for (name, cell, rel) in [
        ("normal", &genotype.normal, &normal_rel),
        ("reduce", &genotype.reduce, &reduce_rel),
    ] {
        write_cell_pictures(&write, name, cell, rel, score_name)?;
    }
    let summary: HashMap<&str, serde_json::Value> = HashMap::from([
        ("seconds", serde_json::json!(start.elapsed().as_secs_f64())),
        (
            "val_accuracy",
            serde_json::json!(searcher.history.last().map(|h| h.val_accuracy)),
        ),
        ("darts", serde_json::json!(genotype.to_darts_string())),
    ]);
    metrics
        .record("search_end", &summary)
        .map_err(CliError::io(&out))?;

    print_summary(
        &out,
        start,
        searcher.history.last(),
        &genotype,
        derive_arg == DeriveArg::Perturb,
    );
    Ok(())
}

/// The perturbation scores a run wrote before, if `path` holds readable ones. The file is a
/// cache: a missing file gives `None`, and an unreadable or malformed one gives `None` with a
/// warning that names it (the scores are then measured again and the file rewritten).
fn previous_scores(path: &std::path::Path) -> Option<PerturbationScores> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            eprintln!(
                "warning: {}: not readable ({e}); measuring the perturbation scores again",
                path.display()
            );
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!(
                "warning: {}: not perturbation scores ({e}); measuring them again",
                path.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: SearchArgs,
    }

    fn resolved(argv: &[&str]) -> Resolved {
        let w =
            Wrap::try_parse_from(std::iter::once("search").chain(argv.iter().copied())).unwrap();
        w.args.resolve().unwrap()
    }

    #[test]
    fn the_parameter_free_cap_defaults_to_4_for_perturbation_only() {
        let r = resolved(&[]);
        assert_eq!((r.derive, r.max_param_free), (DeriveArg::Perturb, Some(4)));
        let r = resolved(&["--derive", "threshold"]);
        assert_eq!(r.max_param_free, None);
        let r = resolved(&["--derive", "darts"]);
        assert_eq!(r.max_param_free, None);
        let r = resolved(&["--preset", "paper"]);
        assert_eq!((r.derive, r.max_param_free), (DeriveArg::Threshold, None));
        let r = resolved(&["--preset", "paper", "--derive", "perturb"]);
        assert_eq!(r.max_param_free, None);
        let r = resolved(&["--max-param-free", "none"]);
        assert_eq!(r.max_param_free, None);
        let r = resolved(&["--derive", "threshold", "--max-param-free", "2"]);
        assert_eq!(r.max_param_free, Some(2));
    }

    #[test]
    fn cheaper_within_defaults_to_2_for_removal_scores_only() {
        let r = |argv: &[&str]| resolved(argv).cheaper_within;
        assert_eq!(r(&[]), Some(2.0));
        assert_eq!(r(&["--cheaper-within", "none"]), None);
        assert_eq!(r(&["--cheaper-within", "0.5"]), Some(0.5));
        assert_eq!(r(&["--perturb-mode", "replace"]), None);
        assert_eq!(r(&["--derive", "threshold"]), None);
        assert_eq!(r(&["--derive", "darts"]), None);
        assert_eq!(r(&["--preset", "paper"]), None);
        assert_eq!(r(&["--preset", "paper", "--derive", "perturb"]), None);
        assert_eq!(
            r(&[
                "--preset",
                "paper",
                "--derive",
                "perturb",
                "--cheaper-within",
                "2"
            ]),
            Some(2.0)
        );
        // `none` goes with any rule; a width needs removal scores.
        assert_eq!(r(&["--derive", "darts", "--cheaper-within", "none"]), None);
        let w = Wrap::try_parse_from(["search", "--derive", "darts", "--cheaper-within", "2"]);
        assert!(w.unwrap().args.resolve().is_err());
    }
}
