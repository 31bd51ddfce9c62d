#!/usr/bin/env python3
"""int8 variant of a ~90 MB model: `fleetctl variant build` against onnxruntime's quantize_dynamic.

    bench.py --fleetctl PATH --workdir DIR [--runs 3]

Builds all-MiniLM-L6-v2 as ONNX (scripts/minilm_onnx.py), then for each tool: wall time of the
whole process (best of --runs), peak resident memory (/usr/bin/time), and for quantize_dynamic also
the time inside the call (imports excluded, the fairest number for it); then the agreement of each
variant with the fp32 outputs on golden inputs (scripts/evaluate-variant.py). Prints a table, the
ratios and the goals, and writes DIR/results.json.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

QDYN = r"""
import sys, time
t0 = time.perf_counter()
from onnxruntime.quantization import quantize_dynamic, QuantType
t1 = time.perf_counter()
quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8, per_channel=sys.argv[3] == "1")
t2 = time.perf_counter()
print(f"CALL {t2 - t1:.4f} IMPORT {t1 - t0:.4f}")
"""


def timed(cmd, out_path):
    """Runs cmd under /usr/bin/time; returns (wall seconds, peak RSS bytes, stdout)."""
    if os.path.exists(out_path):
        os.remove(out_path)
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M"] + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"bench/compress: {' '.join(cmd)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    rss = [int(l.split()[1]) for l in p.stderr.splitlines() if l.startswith("MAXRSS")][-1] * 1024
    return wall, rss, p.stdout


def evaluate(python, base, variant, golden):
    p = subprocess.run([python, os.path.join(REPO, "scripts/evaluate-variant.py"), "--inputs", golden, base, variant],
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fleetctl", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    py = sys.executable
    os.makedirs(a.workdir, exist_ok=True)
    subprocess.run([py, os.path.join(REPO, "scripts/minilm_onnx.py"), a.workdir], check=True, capture_output=True)
    model = os.path.join(a.workdir, "minilm.onnx")
    golden = os.path.join(a.workdir, "golden.npz")
    size = os.path.getsize(model)
    recipes = os.path.join(REPO, "fleet/recipes.yaml")
    rows = []

    def best(label, cmd, out, parse_call=False):
        runs = [timed(cmd, out) for _ in range(a.runs)]
        wall = min(r[0] for r in runs)
        rss = max(r[1] for r in runs)
        call = None
        if parse_call:
            call = min(float(r[2].split()[1]) for r in runs)
        q = evaluate(py, model, out, golden)
        rows.append({"tool": label, "seconds": wall, "call_seconds": call, "peak_rss": rss, "bytes": os.path.getsize(out),
                     "mean_cosine": q["mean_cosine"], "min_cosine": q["min_cosine"], "top1": q["top1_agreement"]})

    ef = os.path.join(a.workdir, "edgefleet-int8.onnx")
    best("fleetctl variant build int8 (no report zstd)",
         [a.fleetctl, "variant", "build", "--input", model, "--recipe", "int8", "--out", ef, "--recipes-file", recipes,
          "--no-evaluate", "--zstd-level", "0"], ef)
    best("fleetctl variant build int8 (report with zstd-3 sizes)",
         [a.fleetctl, "variant", "build", "--input", model, "--recipe", "int8", "--out", ef, "--recipes-file", recipes,
          "--no-evaluate"], ef)
    for pc in ("1", "0"):
        out = os.path.join(a.workdir, f"ort-int8-pc{pc}.onnx")
        best(f"onnxruntime quantize_dynamic QInt8 per_channel={pc == '1'}", [py, "-c", QDYN, model, out, pc], out, parse_call=True)

    # The goals are judged on the default build (report with zstd sizes, what an operator runs);
    # the ratios are printed for the build without them too.
    ours, bare = rows[1], rows[0]
    print(f"model: all-MiniLM-L6-v2 ONNX, {size / 1e6:.1f} MB; golden inputs: 32 sentences; best of {a.runs} runs\n")
    print(f"{'TOOL':58} {'WALL':>8} {'IN-CALL':>8} {'PEAK-RSS':>9} {'SIZE':>8} {'MEAN-COS':>9} {'MIN-COS':>8} {'TOP-1':>6}")
    for r in rows:
        call = f"{r['call_seconds']:.2f}s" if r["call_seconds"] is not None else "-"
        print(f"{r['tool']:58} {r['seconds']:7.2f}s {call:>8} {r['peak_rss'] / 1e6:7.1f}MB {r['bytes'] / 1e6:6.1f}MB "
              f"{r['mean_cosine']:9.5f} {r['min_cosine']:8.5f} {r['top1'] * 100:5.1f}%")
    print()
    goals = []
    for r in rows[2:]:
        ratio_wall = r["seconds"] / ours["seconds"]
        ratio_call = r["call_seconds"] / ours["seconds"]
        print(f"vs {r['tool']}: {ratio_wall:.1f}x faster by wall time, {ratio_call:.1f}x faster than its call alone "
              f"(without the report's zstd sizes: {r['seconds'] / bare['seconds']:.1f}x, {r['call_seconds'] / bare['seconds']:.1f}x); "
              f"agreement {ours['mean_cosine']:.5f} vs {r['mean_cosine']:.5f}")
        goals.append(("at least 5x faster than " + r["tool"] + " (its call alone; default build, report with zstd sizes)", ratio_call >= 5))
        goals.append(("agreement equal or better than " + r["tool"], ours["mean_cosine"] >= r["mean_cosine"]))
    goals.append((f"peak memory under 2x the model ({2 * size / 1e6:.0f} MB)", max(rows[0]["peak_rss"], rows[1]["peak_rss"]) < 2 * size))
    print()
    for g, ok in goals:
        print(f"goal {'met ' if ok else 'MISSED'}: {g}")
    with open(os.path.join(a.workdir, "results.json"), "w") as f:
        json.dump({"model_bytes": size, "rows": rows, "goals": [{"goal": g, "met": ok} for g, ok in goals]}, f, indent=2)
    if os.environ.get("BENCH_STRICT") == "1" and not all(ok for _, ok in goals):
        sys.exit(3)


if __name__ == "__main__":
    main()
