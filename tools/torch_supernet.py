#!/usr/bin/env python3
r"""PyTorch twin of `bayesnas bench step`: the same supernet (DARTS ops, our switches
y = s0 * sum_k s_k op_k(x), search-time BN without affine) and the same train step (forward,
cross-entropy + group lasso over switch groups, backward, SGD with momentum on weights and
switches), timed on the CPU or (--device cuda) on the GPU. Development tool, not part of CI.

    .venv-torch/bin/python tools/torch_supernet.py --threads 2 --channels 16 --cells 8 \
        --batch 32 --image 32 --in-channels 3 --steps 5
    python3 tools/torch_supernet.py --device cuda --channels 36 --cells 8 --batch 64 --steps 10

Prints one JSON line with the median step time and the weight count (which must equal the
`params` of `bayesnas bench step` for the same shape). It has no curvature pass: set its
step_ms against ours minus our curvature_ms too.

With --device cuda: the batch is made on the host and copied to the GPU inside the timed step
(as the search moves each batch); torch.cuda.synchronize() closes every timed phase (as our
phase timings wait for the stream); cuDNN autotuning is on (cudnn.benchmark, as DARTS sets it),
so give it --warmup 2 or more. The line adds gpu_max_allocated_mb
(torch.cuda.max_memory_allocated over the whole run: model, optimiser state, steps),
gpu_max_reserved_mb (the caching allocator's peak) and their per-image figures.
"""
import argparse
import json
import statistics
import sys
import time


def parser():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--space", default="bayesnas")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--image", type=int, default=32)
    ap.add_argument("--in-channels", type=int, default=3)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where the step runs (cuda: timed with torch.cuda.synchronize)")
    return ap


if __name__ == "__main__" and {"-h", "--help"} & set(sys.argv[1:]):
    parser().print_help()  # without importing PyTorch
    sys.exit(0)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

OPS = ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "max_pool_3x3", "avg_pool_3x3", "skip_connect"]

# (from, to) with from in {"in0", "in1", 0..3}; in0 = previous cell (DARTS s1), in1 = the one before (s0)
SPACES = {
    "bayesnas": {
        "normal": [("in0", 0), ("in0", 1), ("in0", 2), ("in1", 0), ("in1", 1), ("in1", 2), ("in1", 3), (0, 3)],
        "reduce": [("in0", 0), ("in1", 0), ("in1", 1), ("in1", 2), ("in1", 3), (0, 1), (0, 2), (0, 3)],
    },
    "darts": {
        "normal": [e for j in range(4) for e in [("in1", j), ("in0", j)] + [(i, j) for i in range(j)]],
        "reduce": [e for j in range(4) for e in [("in1", j), ("in0", j)] + [(i, j) for i in range(j)]],
    },
}


class ReLUConvBN(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout, affine=False))


class FactorizedReduce(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout // 2, 1, stride=2, bias=False)
        self.c2 = nn.Conv2d(cin, cout // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(cout, affine=False)

    def forward(self, x):
        x = F.relu(x)
        return self.bn(torch.cat([self.c1(x), self.c2(x[:, :, 1:, 1:])], dim=1))


def sep(c, k, s):
    p = (k - 1) // 2
    return nn.Sequential(
        nn.ReLU(), nn.Conv2d(c, c, k, s, p, groups=c, bias=False), nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c, affine=False),
        nn.ReLU(), nn.Conv2d(c, c, k, 1, p, groups=c, bias=False), nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c, affine=False))


def dil(c, k, s):
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, k, s, k - 1, dilation=2, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c, affine=False))


class AvgPool(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, x):
        return F.avg_pool2d(x, 3, self.s, 1, count_include_pad=False)


def make_op(name, c, s):
    if name.startswith("sep"):
        return sep(c, 3 if "3x3" in name else 5, s)
    if name.startswith("dil"):
        return dil(c, 3 if "3x3" in name else 5, s)
    if name == "max_pool_3x3":
        return nn.Sequential(nn.MaxPool2d(3, s, 1), nn.BatchNorm2d(c, affine=False))
    if name == "avg_pool_3x3":
        return nn.Sequential(AvgPool(s), nn.BatchNorm2d(c, affine=False))
    return nn.Identity() if s == 1 else FactorizedReduce(c, c)


class Cell(nn.Module):
    def __init__(self, edges, reduction, reduction_prev, c_pp, c_p, c):
        super().__init__()
        self.pre_in1 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c)
        self.pre_in0 = ReLUConvBN(c_p, c)
        self.edges = edges
        self.ops = nn.ModuleList()
        for (f, _) in edges:
            s = 2 if reduction and isinstance(f, str) else 1
            self.ops.append(nn.ModuleList([make_op(o, c, s) for o in OPS]))
        self.s = nn.Parameter(torch.ones(len(edges), len(OPS)))
        self.s0 = nn.Parameter(torch.ones(len(edges)))

    def forward(self, pp, p):
        states = {"in1": self.pre_in1(pp), "in0": self.pre_in0(p)}
        for j in range(4):
            acc = 0
            for e, (f, t) in enumerate(self.edges):
                if t != j:
                    continue
                x = states[f]
                acc = acc + self.s0[e] * sum(self.s[e, k] * op(x) for k, op in enumerate(self.ops[e]))
            states[j] = acc
        return torch.cat([states[j] for j in range(4)], dim=1)


class Supernet(nn.Module):
    def __init__(self, space, c, cells, in_c, classes):
        super().__init__()
        cs = 3 * c
        self.stem = nn.Sequential(nn.Conv2d(in_c, cs, 3, padding=1, bias=False), nn.BatchNorm2d(cs))
        c_pp, c_p, cur = cs, cs, c
        self.cells = nn.ModuleList()
        red_prev = False
        for i in range(cells):
            red = i in (cells // 3, 2 * cells // 3)
            if red:
                cur *= 2
            self.cells.append(Cell(SPACES[space]["reduce" if red else "normal"], red, red_prev, c_pp, c_p, cur))
            red_prev = red
            c_pp, c_p = c_p, 4 * cur
        self.reductions = [i in (cells // 3, 2 * cells // 3) for i in range(cells)]
        self.classifier = nn.Linear(c_p, classes)

    def forward(self, x):
        s = self.stem(x)
        pp, p = s, s
        for cell in self.cells:
            pp, p = p, cell(pp, p)
        return self.classifier(F.adaptive_avg_pool2d(p, 1).flatten(1))

    def switch_params(self):
        return [p for n, p in self.named_parameters() if n.endswith(".s") or n.endswith(".s0")]

    def weight_params(self):
        return [p for n, p in self.named_parameters() if not (n.endswith(".s") or n.endswith(".s0"))]

    def group_lasso(self, lam=0.01):
        # groups: same (cell type, edge, switch) across cells of that type, omega = 1
        total = 0
        for red in (False, True):
            cells = [c for c, r in zip(self.cells, self.reductions) if r == red]
            if not cells:
                continue
            s = torch.stack([c.s for c in cells])      # [cells, E, K]
            s0 = torch.stack([c.s0 for c in cells])    # [cells, E]
            total = total + lam * s.norm(dim=0).sum() + lam * s0.norm(dim=0).sum()
        return total


def main():
    a = parser().parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cuda = a.device == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch.cuda.is_available() is False")
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats()

    def now():
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    net = Supernet(a.space, a.channels, a.cells, a.in_channels, a.classes).to(a.device)
    opt_w = torch.optim.SGD(net.weight_params(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    opt_s = torch.optim.SGD(net.switch_params(), lr=0.01, momentum=0.9)
    fw, bw, up, st = [], [], [], []
    for i in range(a.warmup + a.steps):
        x = torch.randn(a.batch, a.in_channels, a.image, a.image)
        y = torch.randint(0, a.classes, (a.batch,))
        t0 = now()
        x, y = x.to(a.device), y.to(a.device)
        logits = net(x)
        loss = F.cross_entropy(logits, y) + net.group_lasso()
        t1 = now()
        opt_w.zero_grad(set_to_none=False)
        opt_s.zero_grad(set_to_none=False)
        loss.backward()
        t2 = now()
        nn.utils.clip_grad_norm_(net.weight_params(), 5.0)
        opt_w.step()
        opt_s.step()
        t3 = now()
        if i >= a.warmup:
            fw.append(t1 - t0); bw.append(t2 - t1); up.append(t3 - t2); st.append(t3 - t0)
    med = lambda v: statistics.median(v) * 1e3
    line = {
        "framework": f"torch {torch.__version__}", "threads": a.threads,
        "forward_ms": med(fw), "backward_ms": med(bw), "update_ms": med(up), "step_ms": med(st),
        "images_per_s": a.batch / (med(st) / 1e3),
        "params": sum(p.numel() for p in net.weight_params()),
        "switches": sum(p.numel() for p in net.switch_params()),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "batch": a.batch, "steps": a.steps,
    }
    if cuda:
        mib = 1024.0 * 1024.0
        alloc = torch.cuda.max_memory_allocated() / mib
        reserved = torch.cuda.max_memory_reserved() / mib
        line.update({
            "gpu_max_allocated_mb": round(alloc, 1),
            "gpu_max_allocated_mb_per_image": round(alloc / a.batch, 2),
            "gpu_max_reserved_mb": round(reserved, 1),
            "gpu_max_reserved_mb_per_image": round(reserved / a.batch, 2),
        })
    print(json.dumps(line))


if __name__ == "__main__":
    main()
