#!/usr/bin/env python3
"""Depthwise kernels on a GPU: parity with PyTorch and speed against cuDNN and copy bandwidth.

Needs only PyTorch with CUDA and the driver (no cargo, no nvcc): it loads the PTX that
build.rs produced (target/*/build/bayesnas-engine-*/out/depthwise.ptx; copy it into a
carried folder) with the driver API through ctypes and launches the kernels on PyTorch's
stream, with the launch geometry documented in kernels/README.md.

    python3 tools/dw_gpu_check.py path/to/depthwise.ptx [--quick]

Exit status 1 on any parity failure (max |got - want| > 1e-4 * max |want|), 2 on setup errors.
UNTESTED: written on a machine without a GPU (see kernels/README.md).
"""

import ctypes
import sys

import torch
import torch.nn.functional as F


class DwParams(ctypes.Structure):
    # Must match kernels/include/bayesnas_params.h (80 bytes; checked below).
    _fields_ = [
        ("n", ctypes.c_int64),
        ("c", ctypes.c_int64),
        ("h", ctypes.c_int64),
        ("w", ctypes.c_int64),
        ("ho", ctypes.c_int64),
        ("wo", ctypes.c_int64),
        ("k", ctypes.c_int32),
        ("stride", ctypes.c_int32),
        ("padding", ctypes.c_int32),
        ("dilation", ctypes.c_int32),
        ("square_w", ctypes.c_int32),
        ("square_x", ctypes.c_int32),
        ("splits", ctypes.c_int32),
        ("_pad", ctypes.c_int32),
    ]


assert ctypes.sizeof(DwParams) == 80, "DwParams layout differs from the C header"

cuda = ctypes.CDLL("libcuda.so.1")


def check(res, what):
    if res != 0:
        name = ctypes.c_char_p()
        cuda.cuGetErrorName(res, ctypes.byref(name))
        print(f"{what}: CUDA error {res} {name.value}", file=sys.stderr)
        sys.exit(2)


def load(ptx_path):
    torch.zeros(1, device="cuda")  # creates and binds the primary context
    dev = ctypes.c_int()
    check(cuda.cuCtxGetDevice(ctypes.byref(dev)), "cuCtxGetDevice")
    mod = ctypes.c_void_p()
    data = open(ptx_path, "rb").read() + b"\0"
    check(cuda.cuModuleLoadData(ctypes.byref(mod), ctypes.c_char_p(data)), "cuModuleLoadData")
    fns = {}
    for name in ["dw_conv_fwd", "dw_conv_fwd_k3", "dw_conv_bwd_input", "dw_conv_bwd_weight",
                 "dw_conv_bwd_weight_partial", "dw_conv_bwd_weight_finalize"]:
        f = ctypes.c_void_p()
        check(cuda.cuModuleGetFunction(ctypes.byref(f), mod, name.encode()), name)
        fns[name] = f
    return fns


def launch(fn, grid, block, *args):
    holders = []
    for a in args:
        if isinstance(a, torch.Tensor):
            holders.append(ctypes.c_void_p(a.data_ptr()))
        else:
            holders.append(a)
    argv = (ctypes.c_void_p * len(holders))(
        *[ctypes.cast(ctypes.pointer(h), ctypes.c_void_p) for h in holders])
    stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
    check(cuda.cuLaunchKernel(fn, grid[0], grid[1], grid[2], block, 1, 1, 0, stream, argv, None),
          "cuLaunchKernel")


def tiles(rows, cols):
    tw = 16 if cols <= 16 else 32
    ty = 256 // tw
    th = ty * (4 if rows >= 4 * ty else (2 if rows >= 2 * ty else 1))
    return -(-cols // tw) * -(-rows // th)


def timed(fn, reps=50):
    for _ in range(3):
        fn()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps * 1e-3  # seconds


def close(what, got, want):
    err = (got - want).abs().max().item()
    scale = want.abs().max().item()
    ok = err <= 1e-4 * scale
    if not ok:
        print(f"  PARITY FAIL {what}: max err {err:.3e}, scale {scale:.3e}")
    return ok


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    quick = "--quick" in sys.argv
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    fns = load(sys.argv[1])
    # Copy bandwidth (read + write) on a large buffer.
    big = torch.empty(1 << 28, device="cuda")
    out = torch.empty_like(big)
    t = timed(lambda: out.copy_(big), reps=10)
    copy_bw = 2 * big.numel() * 4 / t
    print(f"device copy bandwidth: {copy_bw / 1e9:.0f} GB/s")
    del big, out
    ok = True
    n = 64
    cases = []
    for c in ([16, 64] if quick else [16, 32, 64]):
        for hw in [32, 16]:
            for k, s, d in [(3, 1, 1), (5, 1, 1), (3, 1, 2), (5, 1, 2), (3, 2, 1), (5, 2, 1)]:
                cases.append((c, hw, k, s, d))
    print(f"{'C':>3} {'HW':>3} {'k':>2} {'s':>2} {'d':>2} | "
          f"{'fwd GB/s':>9} {'%copy':>6} {'cudnn x':>8} | {'bwd_in GB/s':>11} {'cudnn x':>8} | "
          f"{'bwd_w us':>8} {'cudnn x':>8}")
    for c, hw, k, s, d in cases:
        pad = d * (k - 1) // 2
        x = torch.randn(n, c, hw, hw, device="cuda")
        w = torch.randn(c, 1, k, k, device="cuda")
        ho = (hw + 2 * pad - d * (k - 1) - 1) // s + 1
        dy = torch.randn(n, c, ho, ho, device="cuda")
        p = DwParams(n=n, c=c, h=hw, w=hw, ho=ho, wo=ho, k=k, stride=s, padding=pad,
                     dilation=d)
        y = torch.empty(n, c, ho, ho, device="cuda")
        fname = "dw_conv_fwd_k3" if k == 3 else "dw_conv_fwd"
        fwd = lambda: launch(fns[fname], (tiles(ho, ho), c, n), 256, x, w, y, p)
        fwd()
        ref = F.conv2d(x, w, stride=s, padding=pad, dilation=d, groups=c)
        ok &= close(f"{fname} c{c} {hw} k{k} s{s} d{d}", y, ref)
        if k == 3:
            y_gen = torch.empty_like(y)
            launch(fns["dw_conv_fwd"], (tiles(ho, ho), c, n), 256, x, w, y_gen, p)
            if not torch.equal(y_gen, y):
                print(f"  dw_conv_fwd and dw_conv_fwd_k3 differ c{c} {hw} s{s} d{d}")
                ok = False
        dx = torch.empty_like(x)
        bwi = lambda: launch(fns["dw_conv_bwd_input"], (tiles(hw, hw), c, n), 256, dy, w, dx, p)
        bwi()
        ref_dx = torch.nn.grad.conv2d_input(x.shape, w, dy, stride=s, padding=pad, dilation=d,
                                            groups=c)
        ok &= close(f"bwd_input c{c} {hw} k{k} s{s} d{d}", dx, ref_dx)
        p.square_w = 1
        bwi()
        ref_hx = torch.nn.grad.conv2d_input(x.shape, w * w, dy, stride=s, padding=pad,
                                            dilation=d, groups=c)
        ok &= close(f"bwd_input sq c{c} {hw} k{k} s{s} d{d}", dx, ref_hx)
        p.square_w = 0
        p.splits = max(1, min(n, -(-1024 // c)))
        part = torch.empty(c * p.splits * k * k, device="cuda")
        dw = torch.empty(c, 1, k, k, device="cuda")

        def bww():
            launch(fns["dw_conv_bwd_weight_partial"], (c, p.splits, 1), 256, x, dy, part, p)
            launch(fns["dw_conv_bwd_weight_finalize"], (-(-c * k * k // 256), 1, 1), 256, part,
                   dw, p)

        bww()
        ref_dw = torch.nn.grad.conv2d_weight(x, w.shape, dy, stride=s, padding=pad, dilation=d,
                                             groups=c)
        ok &= close(f"bwd_weight c{c} {hw} k{k} s{s} d{d}", dw, ref_dw)
        dw1 = torch.empty_like(dw)
        launch(fns["dw_conv_bwd_weight"], (c, 1, 1), 256, x, dy, dw1, p)
        ok &= close(f"bwd_weight single c{c} {hw} k{k} s{s} d{d}", dw1, ref_dw)
        p.square_x = 1
        bww()
        ref_hw = torch.nn.grad.conv2d_weight(x * x, w.shape, dy, stride=s, padding=pad,
                                             dilation=d, groups=c)
        ok &= close(f"bwd_weight sq c{c} {hw} k{k} s{s} d{d}", dw, ref_hw)
        p.square_x = 0
        # Determinism: two runs give the same bits.
        bww()
        first = dw.clone()
        bww()
        if not torch.equal(first, dw):
            print(f"  NOT DETERMINISTIC bwd_weight c{c} {hw} k{k} s{s} d{d}")
            ok = False
        t_f = timed(fwd)
        t_fc = timed(lambda: F.conv2d(x, w, stride=s, padding=pad, dilation=d, groups=c))
        t_bi = timed(bwi)
        t_bic = timed(lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, stride=s, padding=pad,
                                                         dilation=d, groups=c))
        t_bw = timed(bww)
        t_bwc = timed(lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, stride=s,
                                                          padding=pad, dilation=d, groups=c))
        bytes_f = (x.numel() + y.numel()) * 4
        print(f"{c:>3} {hw:>3} {k:>2} {s:>2} {d:>2} | {bytes_f / t_f / 1e9:>9.0f} "
              f"{100 * bytes_f / t_f / copy_bw:>5.0f}% {t_fc / t_f:>8.2f} | "
              f"{bytes_f / t_bi / 1e9:>11.0f} {t_bic / t_bi:>8.2f} | "
              f"{t_bw * 1e6:>8.1f} {t_bwc / t_bw:>8.2f}")
    print("parity: OK" if ok else "parity: FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
