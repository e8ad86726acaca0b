#!/usr/bin/env python3
"""Key figures of the GPU check (gpu-bundle/run.sh, from tools/gpu-run.sh): reads the raw outputs
the run wrote under $OUT and prints one short line per call, which run.sh puts in its summary
table. Plain Python, no PyTorch.

    gpu_check_report.py step OURS.json TORCH.json
    gpu_check_report.py memory OURS.json TORCH.json OURS_SMI.txt TORCH_SMI.txt
    gpu_check_report.py search METRICS.jsonl SEARCH_LOG RC WALL_S CAP_S STEP18.json STEP64.json
    gpu_check_report.py kernels COMPARE.txt
    gpu_check_report.py table ROWS.tsv            (the summary table, markdown)

Missing or broken inputs give a line saying so, never a traceback: the table must print.
"""
import json
import math
import re
import sys

TARGET_S = 180.0  # issue 13: the paper's search protocol end to end in 3 minutes


def last_json(path):
    """The last line of `path` that parses as a JSON object, or None."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def smi_peak(path):
    """(baseline, peak) MiB from an nvidia-smi sample file: the first line is the baseline
    taken before the process started, the rest are samples while it ran."""
    try:
        vals = [float(v) for v in open(path).read().split() if re.fullmatch(r"[0-9.]+", v)]
    except OSError:
        return None
    if len(vals) < 2:
        return None
    return vals[0], max(vals[1:])


def step(ours_path, torch_path):
    o, t = last_json(ours_path), last_json(torch_path)
    if not o or "step_ms" not in o:
        return "no result from bayesnas bench step"
    s = f"ours {o['step_ms']:.1f} ms (curvature {o.get('curvature_ms', 0):.1f} ms, " \
        f"{o.get('host_reads', 0):.0f} host reads, {o.get('launches', 0):.0f} launches)"
    if not t or "step_ms" not in t:
        return s + "; no PyTorch result"
    ratio = o["step_ms"] / t["step_ms"]
    no_curv = (o["step_ms"] - o.get("curvature_ms", 0.0)) / t["step_ms"]
    s += f", torch {t['step_ms']:.1f} ms: ratio ours/torch {ratio:.2f} " \
         f"({no_curv:.2f} without our curvature pass)"
    if o.get("params") != t.get("params"):
        s += f"; WEIGHT COUNTS DIFFER: ours {o.get('params')}, torch {t.get('params')}"
    return s


def memory(ours_path, torch_path, ours_smi, torch_smi):
    o, t = last_json(ours_path) or {}, last_json(torch_path) or {}
    parts = []
    ob, tb = o.get("batch"), t.get("batch")
    op, tp = o.get("gpu_pool_peak_mb"), t.get("gpu_max_allocated_mb")
    if op is not None and tp is not None and ob and tb:
        parts.append(f"allocator peak {op / ob:.2f} MiB/img (our pool) vs {tp / tb:.2f} "
                     f"(torch max_memory_allocated): {op / ob / (tp / tb):.2f}x")
    else:
        parts.append("allocator peak: missing (ours gpu_pool_peak_mb "
                     f"{op}, torch gpu_max_allocated_mb {tp})")
    so, st = smi_peak(ours_smi), smi_peak(torch_smi)
    if so and st and ob and tb:
        do, dt = so[1] - so[0], st[1] - st[0]
        ratio = f": {do / ob / (dt / tb):.2f}x" if dt > 0 else ""
        parts.append(f"nvidia-smi process peak {do / ob:.2f} vs {dt / tb:.2f} MiB/img{ratio} "
                     f"({do:.0f} vs {dt:.0f} MiB, context included)")
    else:
        parts.append("nvidia-smi samples missing")
    return "; ".join(parts)


def search(metrics_path, log_path, rc, wall, cap, step18_path, step64_path):
    """Status and figure of the timed search, with an estimate when it did not finish."""
    rc, wall, cap = int(rc), float(wall), float(cap)
    recs = []
    try:
        for line in open(metrics_path):
            try:
                recs.append(json.loads(line))
            except ValueError:
                pass
    except OSError:
        pass
    end = next((r for r in recs if r.get("event") == "search_end"), None)
    if end is not None:
        secs = float(end.get("seconds", wall))
        verdict = "PASS" if secs <= TARGET_S else "FAIL"
        return f"{verdict}\tsearch {secs:.1f} s (process {wall:.0f} s) vs {TARGET_S:.0f} s target"
    if rc == 125:
        return "NOT RUN\tthe run's deadline was reached before the search"
    try:
        log = open(log_path, errors="replace").read()
    except OSError:
        log = ""
    if rc not in (124, 137):
        tail = [l for l in log.splitlines() if l.strip()][-1:] or ["no output"]
        return f"FAIL\texit {rc} after {wall:.0f} s: {tail[0][:160]}"
    # Timed out: estimate the whole protocol from the split sizes and the step bench at the
    # search's batch (switch epoch: all steps without curvature but the last K).
    start = next((r for r in recs if r.get("event") == "search_start"), {})
    batch = start.get("resolved", {}).get("batch")
    m = re.search(r"\((\d+) weight / (\d+) switch / (\d+) validation images\)", log)
    s18, s64 = last_json(step18_path), last_json(step64_path)
    if not (batch and m and s18 and "step_ms" in s18):
        return f"TIMEOUT\tstopped at the {cap:.0f} s cap; no estimate (missing split sizes or " \
               f"the batch-{batch} step bench)"
    nw, ns, nv = (int(g) for g in m.groups())
    curv_k = 8
    step_s = s18["step_ms"] / 1e3
    plain_s = (s18["step_ms"] - s18.get("curvature_ms", 0.0)) / 1e3
    eval_batch = max(batch, 64)
    val_s = (s64 or {}).get("forward_ms", s18.get("forward_ms", 0.0) * eval_batch / batch) / 1e3
    val_pass = math.ceil(nv / eval_batch) * val_s
    switch_est = (ns // batch - curv_k) * plain_s + curv_k * step_s + val_pass
    warm = next((r for r in recs if r.get("event") == "epoch" and r.get("phase") == "warmup"),
                None)
    if warm is not None:
        est = float(warm["time_s"]) + switch_est
        how = f"warm-up measured ({float(warm['time_s']):.0f} s)"
    else:
        est = (nw // batch) * plain_s + val_pass + switch_est
        how = "warm-up not reached"
    verdict = "FAIL (estimate)" if est > TARGET_S else "TIMEOUT"
    return f"{verdict}\tstopped at the {cap:.0f} s cap; estimate {est:.0f} s vs " \
           f"{TARGET_S:.0f} s target ({how}; switch epoch {ns // batch} steps at " \
           f"{plain_s * 1e3:.0f} ms, {curv_k} with curvature at {step_s * 1e3:.0f} ms, from " \
           f"the batch-{batch} step bench)"


def kernels(compare_path):
    try:
        text = open(compare_path).read()
    except OSError:
        return "no comparison"
    m = re.search(r"geometric mean ratio ours/torch over (\d+) kernels: ([0-9.]+)", text)
    rows = [l for l in text.splitlines() if re.match(r"^\S+\s+\d+x", l)]
    if not m:
        return f"{len(rows)} kernels timed; no PyTorch ratio"
    worst = []
    for l in rows:
        f = l.split()
        try:
            worst.append((float(f[4]), f[0], f[1]))
        except (IndexError, ValueError):
            pass
    worst.sort(reverse=True)
    w = f"; worst {worst[0][1]} {worst[0][2]} {worst[0][0]:.2f}" if worst else ""
    return f"geometric mean ours/torch {m.group(2)} over {m.group(1)} kernels (< 1: faster){w}"


def table(rows_path):
    print("| step | status | seconds | key figure |")
    print("|---|---|---:|---|")
    try:
        lines = open(rows_path).read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        f = (line.split("\t") + ["", "", "", ""])[:4]
        cells = [c.replace("|", "/") for c in f]
        print(f"| {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    try:
        if cmd == "step":
            print(step(*args))
        elif cmd == "memory":
            print(memory(*args))
        elif cmd == "search":
            print(search(*args))
        elif cmd == "kernels":
            print(kernels(*args))
        elif cmd == "table":
            table(*args)
        else:
            sys.exit(f"unknown command {cmd}")
    except Exception as e:  # the summary must print whatever went wrong
        print(f"report error: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
