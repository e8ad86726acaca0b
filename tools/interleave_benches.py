#!/usr/bin/env python3
"""Interleaved, repeated timing of our criterion benches and their PyTorch twins, for a
machine shared with other work: each round runs our bench binary (filtered) and then
tools/torch_kernels.py (same filter, timed like criterion: medians and minima over 20
samples of several calls), so both sides of a ratio see the same load; the
table gives per-kernel medians over the rounds of our time, PyTorch's time and of the
per-round ratio torch / ours (above 1: we are faster). Development tool, not part of CI.

    python3 tools/interleave_benches.py --bench bn_pool --filter 'bn_bwd' --rounds 5 \\
        [--torch-python /work/venv-torch/bin/python] [--threads 2]

The bench binary is built with `cargo bench --no-run` first.
"""
import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys


def bench_binary(bench):
    out = subprocess.run(
        ["cargo", "bench", "--bench", bench, "--no-run", "--message-format=json"],
        check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == bench \
                and msg.get("executable"):
            return msg["executable"]
    sys.exit(f"no executable for bench {bench}")


def criterion_results(root, pattern):
    """{kernel: (median µs, fastest sample µs)} of the last criterion run."""
    out = {}
    for est in pathlib.Path(root).glob("**/new/estimates.json"):
        bench = json.loads((est.parent / "benchmark.json").read_text())
        key = bench.get("full_id") or bench["title"]
        if pattern.search(key):
            med = json.loads(est.read_text())["median"]["point_estimate"] / 1000.0
            sample = json.loads((est.parent / "sample.json").read_text())
            fastest = min(t / i for t, i in zip(sample["times"], sample["iters"])) / 1000.0
            out[key] = (med, fastest)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", action="append", required=True, help="criterion bench (repeatable)")
    ap.add_argument("--filter", required=True, help="regex on the kernel names")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--torch-python", default="/work/venv-torch/bin/python")
    ap.add_argument("--measurement-time", default="1")
    ap.add_argument("--torch-malloc-tuned", action="store_true",
                    help="run PyTorch with MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ raised, which "
                         "removes the page faults it otherwise pays for fresh outputs of 2 MB or more "
                         "(the stronger baseline)")
    args = ap.parse_args()
    pattern = re.compile(args.filter)
    binaries = [bench_binary(b) for b in args.bench]
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    torch_env = dict(os.environ)
    if args.torch_malloc_tuned:
        torch_env.update(MALLOC_MMAP_THRESHOLD_="4000000000", MALLOC_TRIM_THRESHOLD_="4000000000")
    ours, torch, ours_min, torch_min = {}, {}, {}, {}
    for r in range(args.rounds):
        for b in binaries:
            subprocess.run([b, "--bench", "--warm-up-time", "0.3", "--measurement-time",
                            args.measurement_time, args.filter],
                           check=True, capture_output=True, env=env)
        for k, (med, fastest) in criterion_results("target/criterion", pattern).items():
            ours.setdefault(k, []).append(med)
            ours_min.setdefault(k, []).append(fastest)
        t = subprocess.run([args.torch_python, "tools/torch_kernels.py", "--threads", str(args.threads),
                            "--filter", args.filter, "--samples", "20"], check=True, capture_output=True, text=True,
                           env=torch_env).stdout
        t = json.loads(t)
        for k, v in t["median"].items():
            torch.setdefault(k, []).append(v)
            torch_min.setdefault(k, []).append(t["min"][k])
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"Medians over {args.rounds} rounds of: each side's median time, the ratio of the medians "
          "in the same round; and each side's fastest call, their ratio in the same round.\n")
    print("| kernel | ours median (µs) | PyTorch median (µs) | ratio | ours fastest (µs) "
          "| PyTorch fastest (µs) | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    med = statistics.median
    for k in sorted(ours):
        if k not in torch:
            continue
        ratios = [t / o for t, o in zip(torch[k], ours[k])]
        ratios_min = [t / o for t, o in zip(torch_min[k], ours_min[k])]
        print(f"| {k} | {med(ours[k]):.1f} | {med(torch[k]):.1f} | {med(ratios):.2f} "
              f"| {med(ours_min[k]):.1f} | {med(torch_min[k]):.1f} | {med(ratios_min):.2f} |")


if __name__ == "__main__":
    main()
