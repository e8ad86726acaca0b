#!/usr/bin/env python3
"""The search-quality protocol (docs/search-quality.md): train cells under ONE budget.

    python3 tools/quality_protocol.py --out runs/quality \\
        --cell found-threshold=runs/search/genotype.json --cell darts_v2=darts_v2 \\
        --cell random1=random:1 --cell random2=random:2 --cell random3=random:3 \\
        --seeds 0 1 2 [--epochs 5 --max-batches 80 --cells 5 --channels 8]

Every cell is trained with `bayesnas train` on the full training set given by --data-dir
(default: ../shared/data/fashion-mnist) with every training seed, under the same budget, and
tested on that set's test images. Parameter matching: every cell is trained at the largest
even C whose parameter count is at most 1.2x DARTS_V2's at the base --channels (a larger cell
gets fewer channels, a smaller one more; --no-grow keeps smaller cells at the base C), so a
cell cannot win by being larger and a cheap cell is not handicapped. Finished trainings are
skipped when the script is run again (their result.json is read), so an interrupted protocol
resumes. Prints and writes OUT/table.md and OUT/results.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BOUND = 1.2


def train_cmd(args, spec, channels, extra):
    return [
        args.bin, "train", "--genotype", spec, "--cells", str(args.cells), "--channels", str(channels),
        "--dataset", args.dataset, "--data-dir", args.data_dir, "--threads", str(args.threads),
    ] + extra


def params_of(args, spec, channels):
    out = subprocess.run(train_cmd(args, spec, channels, ["--params-only"]), capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"--cell {spec}: bayesnas train --params-only failed:\n{out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])["params"]


def cell_key(spec):
    """What identifies a cell: the content of a genotype file (so two files that hold the
    same genotype are one cell), or the spec itself (darts_v2, random:SEED)."""
    if os.path.isfile(spec):
        with open(spec, encoding="utf-8") as f:
            return json.dumps(json.load(f), sort_keys=True)
    return spec


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--cell", action="append", required=True, metavar="NAME=GENOTYPE",
                   help="a name and a --genotype value of bayesnas train (file, DARTS string, darts_v2, random:SEED)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--max-batches", type=int, default=80)
    p.add_argument("--batch", type=int, default=96)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--cells", type=int, default=5)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "fashion-mnist"))
    p.add_argument("--bin", default=os.environ.get("BAYESNAS", "target/release/bayesnas"))
    p.add_argument("--no-grow", action="store_true", help="never give a cell more than --channels")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)

    cells = []
    for c in args.cell:
        name, sep, spec = c.partition("=")
        if not sep or not name or not spec:
            sys.exit(f"--cell {c}: expected NAME=GENOTYPE")
        cells.append((name, spec))
    bound = BOUND * params_of(args, "darts_v2", args.channels)

    rows = []
    trained = {}  # (cell content, C) -> name of the first cell trained with it in this run
    for name, spec in cells:
        ch = args.channels
        n = params_of(args, spec, ch)
        while n > bound and ch > 2:
            ch -= 2
            n = params_of(args, spec, ch)
        while not args.no_grow and n <= bound:
            up = params_of(args, spec, ch + 2)
            if up > bound:
                break
            ch, n = ch + 2, up
        accs, secs = [], []
        # A cell identical to one listed before it (say a derivation rule that changed
        # nothing) is trained once: its row reads the first one's trainings.
        same_as = trained.setdefault((cell_key(spec), ch), name)
        if same_as != name:
            print(f"{name}: the same cell as {same_as} at C={ch}, its trainings are reused", file=sys.stderr)
        for seed in args.seeds:
            d = os.path.join(args.out, f"{same_as}-c{ch}-s{seed}")
            res = os.path.join(d, "result.json")
            if not os.path.exists(res):
                t0 = time.time()
                cmd = train_cmd(args, spec, ch, [
                    "--epochs", str(args.epochs), "--max-batches", str(args.max_batches), "--batch", str(args.batch),
                    "--lr", str(args.lr), "--seed", str(seed), "--out", d, "--quiet"])
                with open(d + ".log", "w") as log:
                    r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
                if r.returncode != 0:
                    sys.exit(f"training {name} seed {seed} failed: see {d}.log")
                print(f"{name} seed {seed}: {time.time() - t0:.0f} s", file=sys.stderr)
            with open(res) as f:
                result = json.load(f)
            accs.append(100 * result["test_accuracy"])
            secs.append(result["seconds"])
        rows.append({"cell": name, "same_as": None if same_as == name else same_as, "genotype": spec, "channels": ch, "params": n, "accuracies": accs,
                     "mean": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                     "seconds": statistics.mean(secs)})

    randoms = [r["mean"] for r in rows if r["cell"].startswith("random")]
    lines = [
        f"Budget: {args.cells} cells, C matched per cell (base {args.channels}; the largest even C within {BOUND}x DARTS_V2's "
        f"{bound / BOUND:.0f} parameters{', never above the base' if args.no_grow else ''}), {args.epochs} epoch(s) of at most {args.max_batches} batches of {args.batch}, "
        f"lr {args.lr}, training seeds {args.seeds}, {args.dataset} test set.",
        "",
        "| cell | C | params | test accuracy % (mean +- sd) | per seed | vs random mean |",
        "|---|---|---|---|---|---|",
    ]
    rmean = statistics.mean(randoms) if randoms else None
    for r in rows:
        diff = f"{r['mean'] - rmean:+.2f}" if rmean is not None else "-"
        label = r["cell"] if r["same_as"] is None else f"{r['cell']} (= {r['same_as']})"
        lines.append(f"| {label} | {r['channels']} | {r['params']} | {r['mean']:.2f} +- {r['std']:.2f} | "
                     f"{', '.join(f'{a:.2f}' for a in r['accuracies'])} | {diff} |")
    if rmean is not None:
        lines.append(f"| random mean | | | {rmean:.2f} | | |")
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
