#!/usr/bin/env python3
"""What the quality protocol rewards: cell structure against test accuracy
(docs/search-quality.md, "What the protocol rewards").

    python3 tools/cell_features.py RESULTS_JSON [RESULTS_JSON ...] [--seeds 0 1 2] [--json OUT]

Reads the results.json files that tools/quality_protocol.py writes, takes every trained cell
whose genotype is a file with one op per edge (the searched cells; DARTS_V2 and the random
cells are given as specs, not files, and are left out), counts each genotype once (the first
results file that trained it wins), and reports over those cells the Pearson correlation of
the mean test accuracy over the training seeds --seeds with:
- the number of each op in the normal and in the reduction cell,
- the number of parameter-free ops (pools, skip connect) in each cell type,
- the protocol's channel count C (the largest even C within 1.2x DARTS_V2's parameters, so a
  cheaper cell is trained wider) and the parameter count.
With n cells, |r| > 2 / sqrt(n) is a rough 95% bound for no correlation.

Only the Python standard library is used.
"""

import argparse
import json
import math
import os
import statistics
import sys

OPS = ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
       "max_pool_3x3", "avg_pool_3x3", "skip_connect"]
PARAM_FREE = {"max_pool_3x3", "avg_pool_3x3", "skip_connect"}


def pearson(a, b):
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    sa = math.sqrt(sum((x - ma) ** 2 for x in a))
    sb = math.sqrt(sum((y - mb) ** 2 for y in b))
    if sa == 0 or sb == 0:
        return float("nan")
    return sum((x - ma) * (y - mb) for x, y in zip(a, b)) / (sa * sb)


def load_cells(paths, seeds):
    cells = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                res = json.load(f)
            specs = dict(c.split("=", 1) for c in res["args"]["cell"])
            rows = res["rows"]
        except (OSError, ValueError, KeyError) as e:
            sys.exit(f"{path}: not a quality_protocol.py results file ({e})")
        seed_list = res["args"].get("seeds", [])
        for row in rows:
            spec = specs.get(row["cell"])
            if row.get("same_as") or not spec or not os.path.isfile(spec):
                continue
            with open(spec, encoding="utf-8") as f:
                g = json.load(f)
            if any(len(e["ops"]) != 1 for ct in ("normal", "reduce") for e in g[ct]["edges"]):
                continue
            accs = [a for s, a in zip(seed_list, row["accuracies"]) if s in seeds]
            if len(accs) != len(seeds):
                continue
            key = json.dumps([g["normal"], g["reduce"]], sort_keys=True)
            cells.setdefault(key, {
                "name": row["cell"], "channels": row["channels"], "params": row["params"],
                "accuracy": statistics.fmean(accs), "genotype": g,
            })
    return list(cells.values())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--json")
    args = p.parse_args()
    cells = load_cells(args.results, args.seeds)
    if len(cells) < 3:
        sys.exit(f"only {len(cells)} searched cells with training seeds {args.seeds}: need 3")
    acc = [c["accuracy"] for c in cells]
    out = {"cells": len(cells), "seeds": args.seeds, "r": {}}
    print(f"{len(cells)} searched cells, training seeds {args.seeds}; "
          f"|r| > {2 / math.sqrt(len(cells)):.2f} is a rough 95% bound")
    print("| feature | normal cell r | reduction cell r |")
    print("|---|---|---|")
    for feat in OPS + ["parameter-free"]:
        rs = []
        for ct in ("normal", "reduce"):
            counts = [sum((e["ops"][0]["op"] in PARAM_FREE) if feat == "parameter-free"
                          else (e["ops"][0]["op"] == feat) for e in c["genotype"][ct]["edges"])
                      for c in cells]
            rs.append(pearson(acc, counts))
            out["r"][f"{ct}:{feat}"] = rs[-1]
        print(f"| {feat} | {rs[0]:+.2f} | {rs[1]:+.2f} |")
    for feat in ("channels", "params"):
        r = pearson(acc, [c[feat] for c in cells])
        out["r"][feat] = r
        print(f"| {feat} | {r:+.2f} | |")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
