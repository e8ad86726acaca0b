#!/usr/bin/env python3
"""Discrimination and shape figures of `bayesnas search` runs (docs/search-quality.md).

    python3 tools/search_quality.py figures RUN_DIR [RUN_DIR ...] [--json OUT] [--label L]

Each RUN_DIR is the `--out` folder of one search (genotype.json, relevance.json, and
selection.json when the run wrote one). Several folders are taken as several search seeds of
one setting: the per-run figures are printed one line each, then their mean, and the
agreement of the derived cells across the runs.

Figures, per run and cell type:
- kept edges, ops per kept edge (mean), share of parameter-free ops among the kept ops
  (max_pool_3x3, avg_pool_3x3, skip_connect);
- per kept edge, the max/min ratio of the child scores of that edge over all candidate ops
  (the scores the derivation ranked: selection.json's when present, else relevance.json's
  gamma_tilde); "separating" edges are those with a ratio >= 2. A score <= 0 next to a
  positive one counts as an infinite ratio;
- across runs: the mean pairwise Jaccard index of the kept (cell type, edge, op) triples, and
  the same index over (cell type, edge, family) triples, where the family of an op is
  `conv` (the four separable and dilated convolutions), `pool` (max and avg pool) or `skip`:
  whether the seeds agree on the kind of op an edge gets even where they pick different
  members of the kind.

Only the Python standard library is used.
"""

import argparse
import itertools
import json
import math
import os
import statistics
import sys

PARAM_FREE = {"max_pool_3x3", "avg_pool_3x3", "skip_connect"}
CELL_TYPES = ("normal", "reduce")


def family(op):
    if op in ("max_pool_3x3", "avg_pool_3x3"):
        return "pool"
    if op == "skip_connect":
        return "skip"
    return "conv"


def load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        sys.exit(f"{path}: not found (is this the --out folder of a search?)")
    except json.JSONDecodeError as e:
        sys.exit(f"{path}: not valid JSON ({e})")


def edge_scores(run_dir):
    """{cell type: {(from, to): {op: score}}} and the score's name."""
    sel_path = os.path.join(run_dir, "selection.json")
    if os.path.exists(sel_path):
        sel = load_json(sel_path)
        out = {}
        for ct in CELL_TYPES:
            cell = sel.get(ct)
            if cell is None:
                sys.exit(f"{sel_path}: field '{ct}' missing")
            out[ct] = {
                (row["from"], row["to"]): dict(zip(sel["ops"], row["op_scores"]))
                for row in cell["edges"]
            }
        return out, sel.get("score", "selection")
    rel = load_json(os.path.join(run_dir, "relevance.json"))
    out = {}
    for ct in CELL_TYPES:
        edges = {}
        for g in rel[ct]["groups"]:
            if g["kind"] == "child":
                edges.setdefault((g["from"], g["to"]), {})[g["op"]] = g["gamma_tilde"]
        out[ct] = edges
    return out, "gamma_tilde"


def ratio(values):
    hi, lo = max(values), min(values)
    if hi <= 0:
        return float("nan")
    if lo <= 0:
        return math.inf
    return hi / lo


def run_figures(run_dir):
    geno = load_json(os.path.join(run_dir, "genotype.json"))
    scores, score_name = edge_scores(run_dir)
    fig = {"run": run_dir, "score": score_name, "kept": set(), "kept_family": set()}
    for ct in CELL_TYPES:
        edges = geno[ct]["edges"]
        ops = [o["op"] for e in edges for o in e["ops"]]
        ratios = []
        for e in edges:
            fig["kept"].update((ct, e["from"], e["to"], o["op"]) for o in e["ops"])
            fig["kept_family"].update((ct, e["from"], e["to"], family(o["op"])) for o in e["ops"])
            s = scores[ct].get((e["from"], e["to"]))
            if s:
                ratios.append(ratio(list(s.values())))
        fig[ct] = {
            "edges": len(edges),
            "ops_per_edge": len(ops) / max(len(edges), 1),
            "param_free_share": sum(o in PARAM_FREE for o in ops) / max(len(ops), 1),
            "separating": sum(r >= 2 for r in ratios if not math.isnan(r)),
            "median_ratio": statistics.median(ratios) if ratios else float("nan"),
            "ops": ops,
        }
    return fig


def jaccard(a, b):
    return len(a & b) / len(a | b) if a | b else 1.0


def fmt_ratio(r):
    return "inf" if math.isinf(r) else f"{r:.2f}"


def figures(args):
    runs = [run_figures(d) for d in args.runs]
    print(f"# {args.label or 'runs'}: score = {runs[0]['score']}")
    head = "| run | cell | kept edges | ops/edge | separating (max/min>=2) | median max/min | param-free share |"
    print(head)
    print("|" + "---|" * 7)
    for r in runs:
        for ct in CELL_TYPES:
            c = r[ct]
            print(
                f"| {os.path.basename(r['run'].rstrip('/'))} | {ct} | {c['edges']} | {c['ops_per_edge']:.2f} "
                f"| {c['separating']}/{c['edges']} | {fmt_ratio(c['median_ratio'])} "
                f"| {c['param_free_share']:.2f} |"
            )
    pairs = list(itertools.combinations(range(len(runs)), 2))
    jac = [jaccard(runs[i]["kept"], runs[j]["kept"]) for i, j in pairs]
    jac_fam = [jaccard(runs[i]["kept_family"], runs[j]["kept_family"]) for i, j in pairs]
    summary = {"label": args.label, "score": runs[0]["score"], "runs": len(runs)}
    for ct in CELL_TYPES:
        for key in ("edges", "ops_per_edge", "param_free_share", "separating"):
            summary[f"{ct}_{key}"] = statistics.mean(r[ct][key] for r in runs)
    kept_edges = sum(r[ct]["edges"] for r in runs for ct in CELL_TYPES)
    summary["ops_per_kept_edge"] = sum(len(r[ct]["ops"]) for r in runs for ct in CELL_TYPES) / max(kept_edges, 1)
    summary["separating_share"] = sum(r[ct]["separating"] for r in runs for ct in CELL_TYPES) / max(kept_edges, 1)
    summary["jaccard"] = statistics.mean(jac) if jac else None
    summary["jaccard_family"] = statistics.mean(jac_fam) if jac_fam else None
    print()
    print(
        f"mean over {len(runs)} runs: ops/kept edge {summary['ops_per_kept_edge']:.2f}, "
        f"separating edges {100 * summary['separating_share']:.0f}%, "
        f"kept edges normal {summary['normal_edges']:.1f} / reduce {summary['reduce_edges']:.1f}, "
        f"param-free share normal {summary['normal_param_free_share']:.2f} / reduce {summary['reduce_param_free_share']:.2f}"
        + (
            f", Jaccard across runs {summary['jaccard']:.2f} (op families {summary['jaccard_family']:.2f})"
            if jac
            else ""
        )
    )
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            f.write(json.dumps(summary) + "\n")


def table(args):
    """Markdown table of the summaries appended to a figures.jsonl file."""
    print(
        "| setting (rule) | runs | ops/kept edge | separating edges | kept edges N / R "
        "| param-free share N / R | Jaccard | Jaccard of op families |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with open(args.jsonl, encoding="utf-8") as f:
        for line in f:
            s = json.loads(line)
            jac = "-" if s["jaccard"] is None else f"{s['jaccard']:.2f}"
            fam = s.get("jaccard_family")
            fam = "-" if fam is None else f"{fam:.2f}"
            print(
                f"| {s['label']} | {s['runs']} | {s['ops_per_kept_edge']:.2f} | {100 * s['separating_share']:.0f}% "
                f"| {s['normal_edges']:.1f} / {s['reduce_edges']:.1f} "
                f"| {s['normal_param_free_share']:.2f} / {s['reduce_param_free_share']:.2f} | {jac} | {fam} |"
            )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("figures", help="discrimination and shape figures of search runs")
    f.add_argument("runs", nargs="+", metavar="RUN_DIR")
    f.add_argument("--label", default="")
    f.add_argument("--json", help="append the summary as one JSON line to this file")
    t = sub.add_parser("table", help="markdown table of the summaries in a figures.jsonl file")
    t.add_argument("jsonl")
    args = p.parse_args()
    if args.cmd == "figures":
        figures(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
