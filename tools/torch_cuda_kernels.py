#!/usr/bin/env python3
"""Time PyTorch eager CUDA kernels at the shapes of `bayesnas bench kernels --device cuda`.

Runs on the lent GPU machine (PyTorch there, no cargo); gpu-bundle/run.sh calls it. Prints one
JSON line per kernel with the same fields and names as the Rust bench, so that
tools/compare_cuda_kernels.py can join the two:
    {"implementation": "torch", "name": ..., "shape": "NxCxHxW", "median_us": ..., "calls": ...,
     "bytes": ..., "gbs": ..., "copy_gbs": ..., "device": ...}
Medians over --reps timed repetitions, each timed with one pair of CUDA events around --calls
back-to-back calls and divided by --calls (as the Rust bench). Depthwise
convolutions are cuDNN's (torch.backends.cudnn on); the mixed op is `s0 * sum(s_k * x_k)`
forward, and its backward through autograd (dx_k and the switch gradients).
"""
import argparse
import json

import torch
import torch.nn.functional as F

aten = torch.ops.aten

DW = [("sep3", 3, 1), ("sep5", 5, 1), ("dil3", 3, 2), ("dil5", 5, 2)]


DEV = "cuda"


def median_us(fn, reps, warmup, calls=1):
    """Median per-call time (µs) over `reps` repetitions of `calls` back-to-back calls."""
    if calls > 1:
        one = fn

        def fn():
            for _ in range(calls):
                one()
    for _ in range(warmup):
        fn()
    times = []
    if DEV == "cpu":  # smoke test of this script on a machine without a GPU
        import time
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e6)
        times.sort()
        return times[len(times) // 2] / calls
    for _ in range(reps):
        t0 = torch.cuda.Event(enable_timing=True)
        t1 = torch.cuda.Event(enable_timing=True)
        t0.record()
        fn()
        t1.record()
        t1.synchronize()
        times.append(t0.elapsed_time(t1) * 1e3)
    times.sort()
    return times[len(times) // 2] / calls


def copy_gbs(reps):
    n = (256 << 20) // 4
    src = torch.empty(n, device=DEV)
    dst = torch.empty(n, device=DEV)
    us = median_us(lambda: dst.copy_(src), reps, 2)
    return 2 * n * 4 / (us * 1e-6) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--calls", type=int, default=1,
                    help="back-to-back calls per event pair (the time printed is per call)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--filter", default=None)
    ap.add_argument("--device", default="cuda", help="cpu: smoke-test the script without a GPU")
    a = ap.parse_args()
    global DEV
    DEV = a.device
    torch.backends.cudnn.enabled = True
    torch.backends.cudnn.benchmark = True
    dev = torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu"
    cg = copy_gbs(20)
    print(json.dumps({"implementation": "torch", "name": "memcpy_dtod", "shape": "256MiB",
                      "gbs": round(cg, 1), "device": dev}), flush=True)

    def emit(name, shape, nbytes, fn):
        if a.filter and a.filter not in name:
            return
        us = median_us(fn, a.reps, a.warmup, a.calls)
        print(json.dumps({
            "implementation": "torch", "name": name, "shape": "x".join(map(str, shape)),
            "median_us": round(us, 2), "calls": a.calls, "bytes": nbytes,
            "gbs": round(nbytes / (us * 1e-6) / 1e9, 1), "copy_gbs": round(cg, 1),
            "device": dev,
        }), flush=True)

    n, f4 = a.batch, 4
    for hw in (32, 16):
        for c in (16, 32, 64):
            shape = (n, c, hw, hw)
            numel = n * c * hw * hw
            x = torch.rand(shape, device=DEV) * 2 - 1
            dy = torch.rand(shape, device=DEV) * 2 - 1
            for name, k, d in DW:
                w = torch.rand(c, 1, k, k, device=DEV) - 0.5
                pad = d * (k - 1) // 2
                wb = c * k * k * f4
                emit(f"{name}_fwd", shape, 2 * numel * f4 + wb,
                     lambda: F.conv2d(x, w, None, 1, pad, d, c))
                emit(f"{name}_bwd_input", shape, 2 * numel * f4 + wb,
                     lambda: aten.convolution_backward(dy, x, w, None, [1, 1], [pad, pad], [d, d],
                                                       False, [0, 0], c, [True, False, False]))
                emit(f"{name}_bwd_weight", shape, 2 * numel * f4 + wb,
                     lambda: aten.convolution_backward(dy, x, w, None, [1, 1], [pad, pad], [d, d],
                                                       False, [0, 0], c, [False, True, False]))
                # The depthwise-pointwise pair: PyTorch eager runs two convolutions.
                wp = torch.rand(c, c, 1, 1, device=DEV) - 0.5
                emit(f"{name}_pw_fwd", shape, 3 * numel * f4 + wb + c * c * f4,
                     lambda: F.conv2d(F.conv2d(x, w, None, 1, pad, d, c), wp))
            bw = torch.rand(c, device=DEV) + 0.5
            bb = torch.rand(c, device=DEV) - 0.5
            emit("bn_fwd", shape, 2 * numel * f4,
                 lambda: F.batch_norm(x, None, None, bw, bb, True, 0.1, 1e-5))
            xg = x.clone().requires_grad_(True)
            bwg = bw.clone().requires_grad_(True)
            bbg = bb.clone().requires_grad_(True)
            ybn = F.batch_norm(xg, None, None, bwg, bbg, True, 0.1, 1e-5)
            emit("bn_bwd", shape, 3 * numel * f4,
                 lambda: torch.autograd.grad(ybn, (xg, bwg, bbg), dy, retain_graph=True))
            # Batch norm then ReLU (PyTorch eager: two ops each way).
            emit("bn_relu_fwd", shape, 2 * numel * f4,
                 lambda: F.relu(F.batch_norm(x, None, None, bw, bb, True, 0.1, 1e-5)))
            ybr = F.relu(F.batch_norm(xg, None, None, bwg, bbg, True, 0.1, 1e-5))
            emit("bn_relu_bwd", shape, 4 * numel * f4,
                 lambda: torch.autograd.grad(ybr, (xg, bwg, bbg), dy, retain_graph=True))
            for pname, k, s, p in (("pool3_s1", 3, 1, 1), ("pool3_s2", 3, 2, 1)):
                ymax = F.max_pool2d(xg, k, s, p)
                yavg = F.avg_pool2d(xg, k, s, p, count_include_pad=False)
                ny = ymax.numel()
                pdy = torch.rand_like(ymax) * 2 - 1
                emit(f"max{pname}_fwd", shape, (numel + 2 * ny) * f4,
                     lambda: F.max_pool2d(x, k, s, p))
                emit(f"max{pname}_bwd", shape, (numel + 2 * ny) * f4,
                     lambda: torch.autograd.grad(ymax, xg, pdy, retain_graph=True))
                emit(f"avg{pname}_fwd", shape, (numel + ny) * f4,
                     lambda: F.avg_pool2d(x, k, s, p, count_include_pad=False))
                emit(f"avg{pname}_bwd", shape, (numel + ny) * f4,
                     lambda: torch.autograd.grad(yavg, xg, pdy, retain_graph=True))
            K = 8
            xs = [(torch.rand(shape, device=DEV) * 2 - 1).requires_grad_(True) for _ in range(K)]
            sw = (torch.rand(K, device=DEV) * 0.8 + 0.2).requires_grad_(True)
            s0 = (torch.rand(1, device=DEV) * 0.5 + 0.5).requires_grad_(True)

            def mixed():
                return s0 * sum(sw[j] * xs[j] for j in range(K))

            with torch.no_grad():
                emit("mixed8_fwd", shape, (K + 1) * numel * f4, mixed)
            ym = mixed()
            emit("mixed8_bwd", shape, (2 * K + 1) * numel * f4,
                 lambda: torch.autograd.grad(ym, xs + [sw, s0], dy, retain_graph=True))
            emit("mixed8_fwd_bwd", shape, (3 * K + 2) * numel * f4,
                 lambda: torch.autograd.grad(mixed(), xs + [sw, s0], dy))
    if DEV == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
