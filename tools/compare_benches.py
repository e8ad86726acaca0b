#!/usr/bin/env python3
"""Join criterion medians (target/criterion/**/new/estimates.json) with the PyTorch timings
of tools/torch_kernels.py and print a markdown table with the ratio torch/ours (>1: we are
faster). Development tool, not part of CI.

    python3 tools/compare_benches.py torch_kernels.json [--criterion target/criterion]
"""
import argparse
import json
import pathlib


def criterion_medians(root):
    out = {}
    for est in pathlib.Path(root).glob("**/new/estimates.json"):
        bench = json.loads((est.parent / "benchmark.json").read_text())
        key = bench.get("full_id") or bench["title"]
        out[key] = json.loads(est.read_text())["median"]["point_estimate"] / 1000.0  # ns -> us
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("torch_json")
    ap.add_argument("--criterion", default="target/criterion")
    args = ap.parse_args()
    torch = json.loads(pathlib.Path(args.torch_json).read_text())["median"]
    ours = criterion_medians(args.criterion)
    print("| kernel | ours (us) | PyTorch CPU (us) | torch / ours |")
    print("|---|---:|---:|---:|")
    missing = []
    for key in sorted(ours):
        if key in torch:
            print(f"| {key} | {ours[key]:.1f} | {torch[key]:.1f} | {torch[key] / ours[key]:.2f} |")
        else:
            missing.append(key)
    if missing:
        print(f"\n(no PyTorch twin for: {', '.join(missing)})")


if __name__ == "__main__":
    main()
