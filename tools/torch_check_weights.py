#!/usr/bin/env python3
"""Loads the weights bayesnas writes into PyTorch models and re-measures the test metrics.

An independent check that the safetensors files are what their documentation says (names,
shapes, layouts, semantics): the models below are written here from the documented layouts
(DARTS' NetworkCIFAR for `bayesnas train`, LeNet-300-100 / LeNet-5-Caffe for
`bayesnas compress`), load the file with strict names, evaluate the official test set, and
compare with the figures bayesnas reported in result.json / report.json.

    python tools/torch_check_weights.py train OUT_DIR --data-dir DIR     # after bayesnas train
    python tools/torch_check_weights.py compress OUT_DIR --data-dir DIR  # after bayesnas compress

Needs torch, numpy and safetensors (a development tool, not part of CI). Exit status 1 when a
figure disagrees.
"""

import argparse
import gzip
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

# Mean/std bayesnas normalises with (crates/data/src/dataset.rs).
NORMALIZATION = {
    "fashion-mnist": (0.2860, 0.3530),
    "mnist": (0.1307, 0.3081),
}


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(data_dir, stem):
    for name in (stem, stem + ".gz"):
        p = os.path.join(data_dir, name)
        if os.path.exists(p):
            return p
    sys.exit(f"{stem}[.gz] not found in {data_dir}")


def test_set(data_dir):
    x = read_idx(find(data_dir, "t10k-images-idx3-ubyte")).astype(np.float32) / 255.0
    y = read_idx(find(data_dir, "t10k-labels-idx1-ubyte")).astype(np.int64)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


# ----- DARTS NetworkCIFAR, from the layout documented in crates/search/src/retrain/network.rs -----


class ReLUConvBN(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.op(x)


class FactorizedReduce(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv_1 = nn.Conv2d(cin, cout // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(cin, cout // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = F.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def sep_conv(c, k, stride):
    p = (k - 1) // 2
    return nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(c, c, k, stride, p, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(),
        nn.Conv2d(c, c, k, 1, p, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False),
        nn.BatchNorm2d(c),
    )


def dil_conv(c, k, stride):
    return nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(c, c, k, stride, k - 1, dilation=2, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False),
        nn.BatchNorm2d(c),
    )


class Wrap(nn.Module):
    """Gives a Sequential the `op.` prefix DARTS' SepConv/DilConv modules have."""

    def __init__(self, seq):
        super().__init__()
        self.op = seq

    def forward(self, x):
        return self.op(x)


def make_op(name, c, stride):
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if name.startswith("sep_conv_"):
        return Wrap(sep_conv(c, int(name[-1]), stride))
    if name.startswith("dil_conv_"):
        return Wrap(dil_conv(c, int(name[-1]), stride))
    if name == "none":
        raise SystemExit("genotype uses 'none'")
    raise SystemExit(f"unknown op {name}")


class Cell(nn.Module):
    def __init__(self, pairs, concat, c_pp, c_p, c, reduction, reduction_prev):
        super().__init__()
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c)
        self.preprocess1 = ReLUConvBN(c_p, c)
        self._ops = nn.ModuleList()
        self.pairs = pairs
        for name, idx in pairs:
            self._ops.append(make_op(name, c, 2 if reduction and idx < 2 else 1))
        self.concat = concat

    def forward(self, s0, s1):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(len(self.pairs) // 2):
            a = self._ops[2 * i](states[self.pairs[2 * i][1]])
            b = self._ops[2 * i + 1](states[self.pairs[2 * i + 1][1]])
            states.append(a + b)
        return torch.cat([states[i] for i in self.concat], dim=1)


class NetworkCIFAR(nn.Module):
    def __init__(self, genotype, c, classes, layers, in_channels):
        super().__init__()
        stem_c = 3 * c
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_c, 3, padding=1, bias=False), nn.BatchNorm2d(stem_c)
        )
        c_pp, c_p, c_cur = stem_c, stem_c, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_cur *= 2
            pairs, concat = (
                (genotype["reduce"], genotype["reduce_concat"])
                if reduction
                else (genotype["normal"], genotype["normal_concat"])
            )
            self.cells.append(Cell(pairs, concat, c_pp, c_p, c_cur, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, len(concat) * c_cur
        self.classifier = nn.Linear(c_p, classes)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


def parse_darts_genotype(text):
    # "Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=..., reduce_concat=...)"
    body = text.strip()
    if not body.startswith("Genotype(") or not body.endswith(")"):
        raise SystemExit(f"not a DARTS genotype string: {text[:60]}")
    return eval("dict(" + body[len("Genotype(") : -1] + ")", {"__builtins__": {}}, {"dict": dict, "range": range})


def check_train(out_dir, data_dir):
    path = os.path.join(out_dir, "weights.safetensors")
    meta = safe_open(path, "pt").metadata()
    if "darts_genotype" not in meta:
        raise SystemExit(f"{path}: no darts_genotype in the metadata (cell not in DARTS form)")
    result = json.load(open(os.path.join(out_dir, "result.json")))
    cfg = result["config"]
    net = NetworkCIFAR(
        parse_darts_genotype(meta["darts_genotype"]),
        cfg["channels"],
        cfg["classes"],
        cfg["cells"],
        cfg["in_channels"],
    )
    state = {k: v for k, v in load_file(path).items() if not k.startswith("auxiliary_head.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"names do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    n_params = sum(p.numel() for p in net.parameters())
    mean, std = NORMALIZATION[result["dataset"]]
    x, y = test_set(data_dir)
    x = (x - mean) / std
    return net, x, y, result["test_accuracy"], result.get("test_loss"), n_params, result["params"]


# ----- the compressed LeNets, from the layout in pruned.safetensors' metadata -----


class PrunedLeNet(nn.Module):
    def __init__(self, tensors, model):
        super().__init__()
        self.t = tensors
        self.model = model

    def forward(self, x):
        t = self.t
        if self.model == "lenet5":
            h = F.max_pool2d(F.relu(F.conv2d(x, t["conv1.weight"], t["conv1.bias"])), 2)
            h = F.max_pool2d(F.relu(F.conv2d(h, t["conv2.weight"], t["conv2.bias"])), 2)
            fcs = ["fc1", "fc2"]
        else:
            h = x
            fcs = ["fc1", "fc2", "fc3"]
        h = h.flatten(1)
        for i, name in enumerate(fcs):
            idx = t.get(f"{name}.input_index")
            if idx is not None:
                h = h[:, idx.long()]
            h = F.linear(h, t[f"{name}.weight"], t[f"{name}.bias"])
            if i + 1 < len(fcs):
                h = F.relu(h)
        return h


def check_compress(out_dir, data_dir):
    path = os.path.join(out_dir, "pruned.safetensors")
    meta = safe_open(path, "pt").metadata()
    report = json.load(open(os.path.join(out_dir, "report.json")))
    tensors = load_file(path)
    net = PrunedLeNet(tensors, meta["model"])
    # non-zero entries: the weight-level phase holds pruned single weights at zero inside the
    # shrunk tensors
    n_params = sum(int((v != 0).sum()) for k, v in tensors.items() if k.endswith(".weight"))
    x, y = test_set(data_dir)  # compress feeds pixels in [0, 1], no mean shift
    accuracy = 1.0 - report["test_error"] / 100.0
    return net, x, y, accuracy, report.get("test_loss"), n_params, report.get("nonzero_weights")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["train", "compress"])
    ap.add_argument("out_dir")
    ap.add_argument("--data-dir", required=True, help="directory with t10k-images/labels-idx*-ubyte[.gz]")
    ap.add_argument("--tolerance", type=float, default=0.001, help="largest accuracy difference accepted")
    a = ap.parse_args()
    torch.set_num_threads(2)
    check = check_train if a.kind == "train" else check_compress
    net, x, y, want_acc, want_loss, n_params, want_params = check(a.out_dir, a.data_dir)
    net.eval()
    with torch.no_grad():
        logits = torch.cat([net(x[i : i + 500]) for i in range(0, len(x), 500)])
    acc = (logits.argmax(1) == y).float().mean().item()
    loss = F.cross_entropy(logits, y).item()
    print(f"PyTorch: test accuracy {acc:.4%}, loss {loss:.5f}, {n_params} weights")
    print(f"bayesnas: test accuracy {want_acc:.4%}" + (f", loss {want_loss:.5f}" if want_loss else "") + f", {want_params} weights")
    ok = abs(acc - want_acc) <= a.tolerance
    if want_loss is not None:
        ok &= abs(loss - want_loss) <= 1e-3 * max(1.0, abs(want_loss))
    if want_params is not None:
        ok &= n_params == want_params
    print("agree" if ok else "DISAGREE")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
