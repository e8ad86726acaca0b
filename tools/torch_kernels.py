#!/usr/bin/env python3
"""Time PyTorch CPU kernels at the supernet shapes our criterion benches use.

Development tool, not part of CI. Set up once:
    python3 -m venv .venv-torch && .venv-torch/bin/pip install torch
then:
    .venv-torch/bin/python tools/torch_kernels.py --threads 2 > torch_kernels.json
    python3 tools/compare_benches.py torch_kernels.json   # joins with target/criterion

Each entry is named exactly like the criterion benchmark id (group/param) so the two can be
joined. Timings are medians over repeated runs, in microseconds.
"""
import argparse
import json
import re
import statistics
import time

import torch
import torch.nn.functional as F

aten = torch.ops.aten


# --filter: only keys matching this regular expression are timed (None: all)
FILTER = None
# fastest single call (or, with --samples, fastest sample) of every timed kernel
MINIMA = {}
# --samples: time like criterion (SAMPLES samples of several calls each; the statistics are
# over the per-call means of the samples), so that the numbers compare with criterion's
# even when other processes preempt some calls; 0: time single calls
SAMPLES = 0


def timed(results, key, fn):
    """results[key] = median_us(fn), unless --filter excludes the key."""
    if FILTER is None or FILTER.search(key):
        results[key] = median_us(fn, key=key)


def median_us(fn, min_time=0.3, warmup=3, key=None):
    for _ in range(warmup):
        fn()
    if SAMPLES:
        t0 = time.perf_counter()
        fn()
        iters = max(1, int(min_time / SAMPLES / max(time.perf_counter() - t0, 1e-7)))
        times = []
        for _ in range(SAMPLES):
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            times.append((time.perf_counter() - t0) / iters)
        if key is not None:
            MINIMA[key] = min(MINIMA.get(key, float("inf")), min(times) * 1e6)
        return statistics.median(times) * 1e6
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < 10:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    if key is not None:
        MINIMA[key] = min(MINIMA.get(key, float("inf")), min(times) * 1e6)
    return statistics.median(times) * 1e6


def shapes():
    # (n, c, hw): the stages of the engine benches (benches/conv.rs, benches/bn_pool.rs)
    return [(32, 16, 32), (32, 32, 16), (32, 64, 16)]


def conv_case(results, key, tag, x, w, stride, pad, dil, groups):
    y = F.conv2d(x, w, None, stride, pad, dil, groups)
    dy = torch.randn_like(y)
    timed(results, f"{key}_fwd/{tag}", lambda: F.conv2d(x, w, None, stride, pad, dil, groups))
    timed(results, f"{key}_bwd_in/{tag}", lambda: aten.convolution_backward(
        dy, x, w, None, [stride] * 2, [pad] * 2, [dil] * 2, False, [0, 0], groups, [True, False, False]))
    timed(results, f"{key}_bwd_w/{tag}", lambda: aten.convolution_backward(
        dy, x, w, None, [stride] * 2, [pad] * 2, [dil] * 2, False, [0, 0], groups, [False, True, False]))


def conv_entries(results):
    # same names, kernels and shapes as benches/conv.rs
    kinds = [("dw3x3", 3, 1, 1), ("dw5x5", 5, 1, 1), ("dil3x3", 3, 2, 1), ("dil5x5", 5, 2, 1), ("dw3x3s2", 3, 1, 2)]
    for name, k, dil, stride in kinds:
        for (n, c, hw) in shapes():
            if stride == 2 and c == 64:
                continue
            x = torch.randn(n, c, hw, hw)
            w = torch.randn(c, 1, k, k) * 0.1
            conv_case(results, name, f"n{n}_c{c}_{hw}x{hw}", x, w, stride, (k - 1) // 2 * dil, dil, c)
    for (n, c, hw) in shapes():
        conv_case(results, "pw1x1", f"n{n}_c{c}_{hw}x{hw}", torch.randn(n, c, hw, hw), torch.randn(c, c, 1, 1) * 0.1, 1, 0, 1, 1)
    for (n, c, hw) in shapes()[:2]:
        conv_case(results, "pw1x1s2", f"n{n}_c{c}_{hw}x{hw}", torch.randn(n, c, hw, hw), torch.randn(c // 2, c, 1, 1) * 0.1, 2, 0, 1, 1)
    conv_case(results, "stem3x3", "n32_c3to48_32x32", torch.randn(32, 3, 32, 32), torch.randn(48, 3, 3, 3) * 0.1, 1, 1, 1, 1)


def bn_pool_entries(results):
    for (n, c, hw) in shapes():
        tag = f"n{n}_c{c}_{hw}x{hw}"
        x = torch.randn(n, c, hw, hw)
        rm, rv = torch.zeros(c), torch.ones(c)
        timed(results, f"bn_fwd/{tag}", lambda: aten.native_batch_norm(x, None, None, rm, rv, True, 0.1, 1e-5))
        y, save_mean, save_invstd = aten.native_batch_norm(x, None, None, rm, rv, True, 0.1, 1e-5)
        dy = torch.randn_like(y)
        timed(results, f"bn_bwd/{tag}", lambda: aten.native_batch_norm_backward(
            dy, x, None, rm, rv, save_mean, save_invstd, True, 1e-5, [True, False, False]))
        for s in (1, 2):
            y, idx = aten.max_pool2d_with_indices(x, [3, 3], [s, s], [1, 1], [1, 1], False)
            dy = torch.randn_like(y)
            timed(results, f"maxpool3x3s{s}_fwd/{tag}", lambda: F.max_pool2d(x, 3, s, 1))
            timed(results, f"maxpool3x3s{s}_bwd/{tag}", lambda: aten.max_pool2d_with_indices_backward(
                dy, x, [3, 3], [s, s], [1, 1], [1, 1], False, idx))
            timed(results, f"avgpool3x3s{s}_fwd/{tag}", lambda: F.avg_pool2d(x, 3, s, 1, count_include_pad=False))
            timed(results, f"avgpool3x3s{s}_bwd/{tag}", lambda: aten.avg_pool2d_backward(
                dy, x, [3, 3], [s, s], [1, 1], False, False, None))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--filter", help="time only the kernels whose name matches this regex")
    ap.add_argument("--samples", type=int, default=0,
                    help="time N samples of several calls each (like criterion) instead of single calls")
    ap.add_argument("--repeat", type=int, default=1,
                    help="time each kernel this many times (interleaved rounds), report the median")
    args = ap.parse_args()
    global FILTER, SAMPLES
    SAMPLES = args.samples
    FILTER = re.compile(args.filter) if args.filter else None
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rounds = []
    with torch.no_grad():
        for _ in range(args.repeat):
            results = {}
            conv_entries(results)
            bn_pool_entries(results)
            rounds.append(results)
    results = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(json.dumps({"torch": torch.__version__, "threads": args.threads, "unit": "us", "median": results, "min": MINIMA}, indent=1))


if __name__ == "__main__":
    main()
