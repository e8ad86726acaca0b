#!/usr/bin/env python3
"""Join `bayesnas bench kernels` and tools/torch_cuda_kernels.py outputs (JSON lines) and print
a table: our median, PyTorch's, the ratio ours/torch (< 1: we are faster), and our achieved
bandwidth as a fraction of the measured device-to-device copy bandwidth.

    python3 tools/compare_cuda_kernels.py ours.jsonl torch.jsonl
"""
import json
import sys


def load(path):
    rows, copy = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if r.get("name") == "memcpy_dtod":
                copy = r.get("gbs")
                continue
            rows[(r["name"], r["shape"])] = r
    return rows, copy


def main():
    ours, ocopy = load(sys.argv[1])
    torch, tcopy = load(sys.argv[2]) if len(sys.argv) > 2 else ({}, None)
    print(f"device-to-device copy: ours {ocopy} GB/s, torch {tcopy} GB/s")
    calls = lambda rows: sorted({r.get("calls", 1) for r in rows.values()})
    print(f"calls per event pair: ours {calls(ours)}, torch {calls(torch)} "
          f"(times are per call)")
    print(f"{'kernel':<20} {'shape':<14} {'ours us':>9} {'torch us':>9} {'ratio':>6} "
          f"{'ours GB/s':>9} {'%copy':>6}")
    ratios = []
    for key in sorted(ours, key=lambda k: (k[1], k[0])):
        o = ours[key]
        t = torch.get(key)
        tus = t["median_us"] if t else None
        ratio = o["median_us"] / tus if tus else None
        if ratio:
            ratios.append(ratio)
        pct = 100 * o["gbs"] / ocopy if ocopy else None
        print(f"{key[0]:<20} {key[1]:<14} {o['median_us']:>9.1f} "
              f"{(f'{tus:.1f}' if tus else '-'):>9} {(f'{ratio:.2f}' if ratio else '-'):>6} "
              f"{o['gbs']:>9.1f} {(f'{pct:.0f}' if pct else '-'):>6}")
    if ratios:
        import math
        gm = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        print(f"geometric mean ratio ours/torch over {len(ratios)} kernels: {gm:.2f}")


if __name__ == "__main__":
    main()
