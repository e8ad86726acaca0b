#!/usr/bin/env python3
"""Do the prior's quantities rank an edge's ops as the held-out loss does? (docs/search-quality.md)

    python3 tools/prior_vs_perturbation.py RUN_DIR [RUN_DIR ...] [--json OUT]

Each RUN_DIR is the `--out` folder of one `bayesnas search` with `--derive perturb` (it holds
relevance.json, written by every search, and perturbation.json). Several folders are taken as
several search seeds of one setting.

For every cell type and edge, the seven candidate ops are ranked by the perturbation score
(the rise of the held-out loss when the op's switch is set to 0, perturbation.json) and by
each quantity of the Bayesian update (relevance.json, one group per (edge, op), summed or
averaged over the cells of the type):

- `s`: the switch after the switch epoch (mean over cells);
- `h`: the curvature of the data loss in the switch (sum over cells);
- `s2h`: sum of s^2 h, the second-order estimate of the removal rise at a stationary point
  (Optimal Brain Damage's saliency);
- `gamma`: the child group's prior variance after the update;
- `gamma_tilde`: the relevance the threshold and DARTS rules read.

Figures per (cell type, quantity):
- `rho_rise`: Spearman rank correlation with the perturbation score within each edge, mean over
  edges and runs (the ops of one edge only; edges are never pooled);
- `top1`: share of edges where the quantity's best op is the perturbation score's best op
  (chance: 1/7 = 0.14);
- `rho_seeds`: Spearman correlation of the same edge's seven values between two runs, mean
  over edges and pairs of runs: whether the quantity is a property of the op on that edge
  (reproduced by another search seed) or noise. Given for the perturbation score too.
- `pf_rank`: mean rank (1 = best of 7) of the three parameter-free ops by the quantity.

When perturbation.json holds the standard errors of the rises' differences (written since
`--cheaper-within`), each run also gets the share of edges whose best op leads the second
by more than 2 standard errors: how often the held-out set itself resolves the choice.

Ties are ranked by their average rank. Only the Python standard library is used.
"""

import argparse
import itertools
import json
import os
import statistics
import sys

# The figures' definitions and file reading are search_quality.py's (same folder).
from search_quality import CELL_TYPES, PARAM_FREE, load_json  # noqa: E402

QUANTITIES = ("rise", "s", "h", "s2h", "gamma", "gamma_tilde")


def ranks(values):
    """Ranks 0..n-1 (ascending), ties get their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2
        i = j + 1
    return out


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    den = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return num / den if den > 0 else 0.0


def run_quantities(run_dir):
    """{cell type: [ {quantity: [7 values]} per edge ]} and the op names."""
    rel = load_json(os.path.join(run_dir, "relevance.json"))
    per = load_json(os.path.join(run_dir, "perturbation.json"))
    ops = rel.get("ops")
    if not isinstance(ops, list):
        sys.exit(f"{run_dir}/relevance.json: field 'ops' missing")
    out = {}
    for ct in CELL_TYPES:
        if ct not in rel or ct not in per:
            sys.exit(f"{run_dir}: cell type '{ct}' missing in relevance.json or perturbation.json")
        by_edge = {}
        for g in rel[ct]["groups"]:
            if g["kind"] == "child":
                by_edge.setdefault(g["edge"], {})[g["op"]] = g
        rises = per[ct]
        if len(rises) != len(by_edge):
            sys.exit(
                f"{run_dir}: {len(rises)} edges in perturbation.json, {len(by_edge)} in relevance.json"
            )
        edges = []
        for e in sorted(by_edge):
            groups = by_edge[e]
            if set(groups) != set(ops):
                sys.exit(f"{run_dir}/relevance.json: {ct} edge {e} lacks some of the ops {ops}")
            cells = [groups[o]["cells"] for o in ops]
            edges.append(
                {
                    "rise": list(rises[e]),
                    "s": [statistics.fmean(c["s"] for c in cs) for cs in cells],
                    "h": [sum(c["h"] for c in cs) for cs in cells],
                    "s2h": [sum(c["s"] ** 2 * c["h"] for c in cs) for cs in cells],
                    "gamma": [groups[o]["gamma"] for o in ops],
                    "gamma_tilde": [groups[o]["gamma_tilde"] for o in ops],
                }
            )
        out[ct] = edges
    return out, ops


def resolved_share(run_dir, z=2.0):
    """Share of edges whose best op's rise leads the second's by more than z standard errors
    of their difference, or None when perturbation.json has no standard errors."""
    per = load_json(os.path.join(run_dir, "perturbation.json"))
    if not all(f"{ct}_se" in per for ct in CELL_TYPES):
        return None
    gaps = []
    for ct in CELL_TYPES:
        for rise, se in zip(per[ct], per[f"{ct}_se"]):
            order = sorted(range(len(rise)), key=lambda i: -rise[i])
            b, c = order[0], order[1]
            gaps.append(rise[b] - rise[c] > z * se[b][c])
    return sum(gaps) / len(gaps)


def figures(run_dirs):
    runs = []
    ops = None
    for d in run_dirs:
        q, o = run_quantities(d)
        if ops is not None and o != ops:
            sys.exit(f"{d}: ops {o} differ from the first run's {ops}")
        ops = o
        runs.append(q)
    pf = [i for i, o in enumerate(ops) if o in PARAM_FREE]
    rows = []
    for ct in CELL_TYPES:
        for name in QUANTITIES:
            rho, top1, pf_rank = [], [], []
            for run in runs:
                for edge in run[ct]:
                    v, rise = edge[name], edge["rise"]
                    rho.append(spearman(v, rise))
                    best = max(range(len(v)), key=lambda i: v[i])
                    top1.append(1.0 if best == max(range(len(rise)), key=lambda i: rise[i]) else 0.0)
                    r = ranks([-x for x in v])
                    pf_rank.append(statistics.fmean(r[i] + 1 for i in pf))
            seeds = [
                spearman(a[ct][e][name], b[ct][e][name])
                for a, b in itertools.combinations(runs, 2)
                for e in range(len(a[ct]))
            ]
            rows.append(
                {
                    "cell_type": ct,
                    "quantity": name,
                    "runs": len(runs),
                    "edges": len(rho),
                    "rho_rise": statistics.fmean(rho),
                    "top1": statistics.fmean(top1),
                    "rho_seeds": statistics.fmean(seeds) if seeds else None,
                    "pf_rank": statistics.fmean(pf_rank),
                }
            )
    return rows


def table(rows):
    lines = [
        "| cell type | quantity | rho with the rise (within edge) | same best op | rho between seeds | param-free mean rank |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        seeds = "-" if r["rho_seeds"] is None else f"{r['rho_seeds']:+.2f}"
        rho = "1 (itself)" if r["quantity"] == "rise" else f"{r['rho_rise']:+.2f}"
        top1 = "-" if r["quantity"] == "rise" else f"{r['top1']:.2f}"
        lines.append(
            f"| {r['cell_type']} | {r['quantity']} | {rho} | {top1} | {seeds} | {r['pf_rank']:.1f} |"
        )
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    a = p.parse_args()
    rows = figures(a.runs)
    print(f"{len(a.runs)} runs; chance for 'same best op' is 1/7 = 0.14, for rho 0")
    print(table(rows))
    resolved = {d: resolved_share(d) for d in a.runs}
    known = [v for v in resolved.values() if v is not None]
    if known:
        print(
            "edges whose best op leads the second by > 2 standard errors: "
            + ", ".join(f"{os.path.basename(d.rstrip('/'))} {v:.2f}" for d, v in resolved.items() if v is not None)
            + f" (median {statistics.median(known):.2f})"
        )
    if a.json:
        tmp = a.json + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"runs": a.runs, "figures": rows, "resolved_best_op": resolved}, f, indent=1)
        os.replace(tmp, a.json)


if __name__ == "__main__":
    main()
