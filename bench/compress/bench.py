#!/usr/bin/env python3
"""Variants of a ~90 MB model against onnxruntime's own quantizers, in one run.

    bench.py --fleetctl PATH --workdir DIR [--runs 3] [--rounds 20]

Builds all-MiniLM-L6-v2 as ONNX (scripts/minilm_onnx.py) with its 32 golden sentences, and 32 other
sentences for calibration (never the golden ones). Then:

1. Build time: `fleetctl variant build --recipe int8` against onnxruntime's quantize_dynamic
   (per-channel and per-tensor): wall time (best of --runs), peak RSS, time inside the call.
2. Inference: the fleetctl recipes (storage-only and compute forms, int8 and int4) next to fp32,
   quantize_dynamic (QInt8, per channel) and MatMulNBitsQuantizer (int4, block 32, symmetric,
   accuracy_level 4) outputs of the same model: size, agreement with fp32 (scripts/evaluate-variant.py's
   batch-1 measure on the golden sentences) and latency, batch 1, one thread, every model in one
   process, interleaved round by round (the ratio of each round's medians, then the median ratio:
   a shared machine moves absolute times, not the order).

Prints the tables, the ratios and the goals, and writes DIR/results.json.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "scripts"))

QDYN = r"""
import sys, time
t0 = time.perf_counter()
from onnxruntime.quantization import quantize_dynamic, QuantType
t1 = time.perf_counter()
quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8, per_channel=sys.argv[3] == "1")
t2 = time.perf_counter()
print(f"CALL {t2 - t1:.4f} IMPORT {t1 - t0:.4f}")
"""

NBITS = r"""
import logging, sys, onnx
logging.disable(logging.INFO)
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
q = MatMulNBitsQuantizer(onnx.load(sys.argv[1]), block_size=int(sys.argv[3]), is_symmetric=True, accuracy_level=4)
q.process()
q.model.save_model_to_file(sys.argv[2])
"""

# Calibration sentences: like the served text, apart from the golden ones that measure agreement.
CALIBRATION = [
    "The train to the airport leaves every twenty minutes.",
    "Firmware updates are installed overnight when the device is idle.",
    "A light rain is expected in the afternoon across the region.",
    "He bought fresh vegetables at the market on Saturday morning.",
    "The sensor reports temperature and humidity once a minute.",
    "Please send the invoice to the accounting department by Friday.",
    "The library extended its opening hours during the exam period.",
    "Our team won the regional chess tournament last spring.",
    "The hiking trail climbs steeply through the pine forest.",
    "Battery life drops quickly when the screen brightness is high.",
    "The concert was sold out within an hour of the announcement.",
    "She is learning Portuguese before moving to Brazil next year.",
    "The bridge will be closed for repairs until the end of the month.",
    "A model that is too large will not fit on the small boards.",
    "The chef recommends the grilled fish with lemon and herbs.",
    "Traffic was heavy on the highway because of an accident.",
    "The telescope captured detailed images of the distant galaxy.",
    "Remember to water the plants while we are away on holiday.",
    "The software crashed after the latest operating system update.",
    "Prices for electricity rose sharply during the winter months.",
    "The children built a sandcastle on the beach.",
    "An encrypted connection protects the data sent to the server.",
    "The old lighthouse has been turned into a small museum.",
    "He runs five kilometres every morning before breakfast.",
    "The meeting was moved to the larger conference room.",
    "Wind turbines were installed along the coast last year.",
    "The recipe needs to bake for forty minutes at high heat.",
    "Customers can return the product within thirty days.",
    "The festival attracts visitors from all over the country.",
    "A backup generator keeps the hospital running during outages.",
    "The students presented their research at the science fair.",
    "Snow closed the mountain pass for most of the week.",
]

INT8_RECIPES = ["int8", "int8-dyn", "int8-dyn-std", "int8-dyn-smooth", "int8-mixed"]
INT4_RECIPES = ["int4-b32", "int4-nbits-b32", "int4-nbits-b32-smooth", "int4-nbits-b64", "int4-nbits-b128", "int4-mixed-b64"]
# Structured pruning (no retraining): measured for its speed; its agreement is reported, not a goal.
PRUNED_RECIPES = ["fp32-pruned-ffn25", "int8-dyn-pruned-ffn25"]


def timed(cmd, out_path, cwd=None):
    """Runs cmd under /usr/bin/time; returns (wall seconds, peak RSS bytes, stdout)."""
    if os.path.exists(out_path):
        os.remove(out_path)
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M"] + cmd, capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"bench/compress: {' '.join(cmd)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    rss = [int(l.split()[1]) for l in p.stderr.splitlines() if l.startswith("MAXRSS")][-1] * 1024
    return wall, rss, p.stdout


def evaluator_module():
    spec = importlib.util.spec_from_file_location("evaluate_variant", os.path.join(REPO, "scripts/evaluate-variant.py"))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def build_times(a, model, golden, rows_out):
    """Part 1: how long building the int8 variant takes, fleetctl against quantize_dynamic."""
    recipes = os.path.join(REPO, "fleet/recipes.yaml")
    py = sys.executable
    rows = []

    def best(label, cmd, out, parse_call=False):
        runs = [timed(cmd, out) for _ in range(a.runs)]
        call = min(float(r[2].split()[1]) for r in runs) if parse_call else None
        rows.append({"tool": label, "seconds": min(r[0] for r in runs), "call_seconds": call,
                     "peak_rss": max(r[1] for r in runs), "bytes": os.path.getsize(out)})

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
    ours, bare = rows[1], rows[0]
    print(f"{'BUILD':58} {'WALL':>8} {'IN-CALL':>8} {'PEAK-RSS':>9} {'SIZE':>8}")
    for r in rows:
        call = f"{r['call_seconds']:.2f}s" if r["call_seconds"] is not None else "-"
        print(f"{r['tool']:58} {r['seconds']:7.2f}s {call:>8} {r['peak_rss'] / 1e6:7.1f}MB {r['bytes'] / 1e6:6.1f}MB")
    goals = []
    for r in rows[2:]:
        ratio_call = r["call_seconds"] / ours["seconds"]
        print(f"  vs {r['tool']}: {r['seconds'] / ours['seconds']:.1f}x faster by wall time, {ratio_call:.1f}x than its call alone "
              f"(without the report's zstd sizes: {r['seconds'] / bare['seconds']:.1f}x, {r['call_seconds'] / bare['seconds']:.1f}x)")
        goals.append(("build: at least 5x faster than " + r["tool"] + " (its call alone; default build, report with zstd sizes)", ratio_call >= 5))
    size = os.path.getsize(model)
    goals.append((f"build: peak memory under 2x the model ({2 * size / 1e6:.0f} MB)", max(rows[0]["peak_rss"], rows[1]["peak_rss"]) < 2 * size))
    rows_out.extend(rows)
    return goals


def inference(a, model, golden, calib):
    """Part 2: size, agreement and latency of every variant next to fp32 and onnxruntime's quantizers."""
    import numpy as np
    import onnxruntime as ort
    py = sys.executable
    recipes = os.path.join(REPO, "fleet/recipes.yaml")
    calibrator = f"'{py}' '{os.path.join(REPO, 'scripts/calibrate-variant.py')}'"
    models = [("fp32", "fp32", model, None)]
    for r in INT8_RECIPES + INT4_RECIPES + PRUNED_RECIPES:
        out = os.path.join(a.workdir, f"ef-{r}.onnx")
        cmd = [a.fleetctl, "variant", "build", "--input", model, "--recipe", r, "--out", out, "--recipes-file", recipes,
               "--no-evaluate", "--zstd-level", "0", "--report", out + ".json", "--calibrate", calibrator, "--calibration-inputs", calib]
        wall, _, _ = timed(cmd, out, cwd=REPO)
        with open(out + ".json") as f:
            form = json.load(f).get("form", "")
        models.append((f"fleetctl {r}", r.split("-")[0], out, {"recipe": r, "form": form, "build_seconds": wall}))
    models.append(("onnxruntime quantize_dynamic per-channel", "ort-int8", os.path.join(a.workdir, "ort-int8-pc1.onnx"), None))
    nb = os.path.join(a.workdir, "ort-nbits-b32.onnx")
    timed([py, "-c", NBITS, model, nb, "32"], nb)
    models.append(("onnxruntime MatMulNBitsQuantizer b32 acc4", "ort-int4", nb, None))

    ev = evaluator_module()
    import variant_inputs
    base = ev.session(model, "")
    feed = variant_inputs.inputs_for(model, base, golden)
    samples = variant_inputs.split_samples(feed, base)
    rows = []
    for label, kind, path, extra in models:
        q = ev.agreement(base, ev.session(path, ""), feed, samples)
        rows.append({"model": label, "kind": kind, "path": path, "bytes": os.path.getsize(path), "mean_cosine": q["mean_cosine"],
                     "min_cosine": q["min_cosine"], **(extra or {})})

    # Latency: one process, one thread each, every model once per round over the 32 samples, the
    # order rotated each round; per round each model's median, then the median over rounds of the
    # ratio to fp32's median of the same round.
    def sess(p):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        return ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
    sessions = [sess(r["path"]) for r in rows]
    for s in sessions:
        for x in samples:
            s.run(None, x)
    # Wall time, and the CPU time of the calling thread (with one intra-op thread onnxruntime runs
    # there): on a shared machine preemption moves the first, not the second.
    per_round = [[] for _ in rows]
    per_round_cpu = [[] for _ in rows]
    for rnd in range(a.rounds):
        order = list(range(len(rows)))
        order = order[rnd % len(order):] + order[:rnd % len(order)]
        for i in order:
            t, c = [], []
            for x in samples:
                c0 = time.thread_time()
                t0 = time.perf_counter()
                sessions[i].run(None, x)
                t.append(time.perf_counter() - t0)
                c.append(time.thread_time() - c0)
            per_round[i].append(float(np.median(t)))
            per_round_cpu[i].append(float(np.median(c)))

    def ratios(ref, times):
        return [f / t for f, t in zip(ref, times)]
    for r, times, cpu in zip(rows, per_round, per_round_cpu):
        q = ratios(per_round[0], times)
        r["median_ms"] = float(np.median(times)) * 1e3
        r["speed_vs_fp32"] = float(np.median(q))
        r["speed_vs_fp32_iqr"] = [float(np.percentile(q, 25)), float(np.percentile(q, 75))]
        r["cpu_speed_vs_fp32"] = float(np.median(ratios(per_round_cpu[0], cpu)))
        r["round_medians_ms"] = [t * 1e3 for t in times]
        r["round_cpu_medians_ms"] = [t * 1e3 for t in cpu]
    index = {r["model"]: i for i, r in enumerate(rows)}
    ort8 = index["onnxruntime quantize_dynamic per-channel"]
    ort4 = index["onnxruntime MatMulNBitsQuantizer b32 acc4"]
    for r, times, cpu in zip(rows, per_round, per_round_cpu):
        peer = ort8 if r["kind"] in ("int8", "ort-int8") else ort4 if r["kind"] in ("int4", "ort-int4") else None
        if peer is not None:
            q = ratios(per_round[peer], times)
            r["speed_vs_peer"] = float(np.median(q))
            r["speed_vs_peer_iqr"] = [float(np.percentile(q, 25)), float(np.percentile(q, 75))]
            r["cpu_speed_vs_peer"] = float(np.median(ratios(per_round_cpu[peer], cpu)))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fleetctl", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    py = sys.executable
    os.makedirs(a.workdir, exist_ok=True)
    subprocess.run([py, os.path.join(REPO, "scripts/minilm_onnx.py"), a.workdir], check=True, capture_output=True)
    model = os.path.join(a.workdir, "minilm.onnx")
    golden = os.path.join(a.workdir, "golden.npz")
    import minilm_onnx
    import numpy as np
    vocab = minilm_onnx.load_vocab(os.path.join(minilm_onnx.model_dir(), "vocab.txt"))
    calib = os.path.join(a.workdir, "calibration.npz")
    np.savez(calib, **minilm_onnx.tokenize(CALIBRATION, vocab))
    size = os.path.getsize(model)
    print(f"model: all-MiniLM-L6-v2 ONNX, {size / 1e6:.1f} MB; golden inputs: 32 sentences; calibration: 32 other sentences\n")

    build_rows = []
    goals = build_times(a, model, golden, build_rows)
    print()
    rows = inference(a, model, golden, calib)

    import onnxruntime as ort
    cpu = evaluator_module().cpu_info()
    print(f"\ninference: onnxruntime {ort.__version__}, batch 1, one thread, {a.rounds} rounds x 32 sentences, "
          f"{cpu['model']} ({', '.join(f for f in cpu['flags'] if 'avx512' in f or 'vnni' in f or f in ('avx2', 'asimddp', 'i8mm'))})")
    print(f"{'MODEL':44} {'FORM':13} {'SIZE':>8} {'xFP32':>6} {'MEAN-COS':>9} {'MIN-COS':>8} {'MEDIAN':>9} {'vs FP32 (IQR)':>19} {'vs ORT (IQR)':>19} {'CPU vs FP32/ORT':>16}")
    for r in rows:
        fp = f"{r['speed_vs_fp32']:.2f}x ({r['speed_vs_fp32_iqr'][0]:.2f}-{r['speed_vs_fp32_iqr'][1]:.2f})"
        peer = f"{r['speed_vs_peer']:.2f}x ({r['speed_vs_peer_iqr'][0]:.2f}-{r['speed_vs_peer_iqr'][1]:.2f})" if "speed_vs_peer" in r else "-"
        cpu = f"{r['cpu_speed_vs_fp32']:.2f}x/" + (f"{r['cpu_speed_vs_peer']:.2f}x" if "cpu_speed_vs_peer" in r else "-")
        form = r.get("form") or ("reference" if r["kind"] == "fp32" else "compute")
        print(f"{r['model']:44} {form:13} {r['bytes'] / 1e6:6.1f}MB {r['bytes'] / size:6.3f} {r['mean_cosine']:9.5f} {r['min_cosine']:8.5f} "
              f"{r['median_ms']:7.3f}ms {fp:>19} {peer:>19} {cpu:>16}")
    print("(vs ORT: int8 rows against quantize_dynamic per-channel, int4 rows against MatMulNBitsQuantizer b32; speed: median over rounds of\n"
          " the ratio of each round's medians, wall time, with the interquartile range of those ratios; CPU: the same from the thread's CPU time)\n")

    ours8 = [r for r in rows if r["kind"] == "int8" and r.get("form") == "compute" and r["mean_cosine"] >= 0.995]
    ours4 = [r for r in rows if r["kind"] == "int4" and r.get("form") == "compute" and r["mean_cosine"] >= 0.97 and r["bytes"] <= 0.2 * size]
    best8 = max(ours8, key=lambda r: r["speed_vs_peer"], default=None)
    best4 = max(ours4, key=lambda r: r["speed_vs_fp32"], default=None)
    if best8:
        print(f"best int8 recipe with mean cosine >= 0.995: {best8['recipe']}: {best8['speed_vs_peer']:.2f}x quantize_dynamic per-channel's speed "
              f"(IQR {best8['speed_vs_peer_iqr'][0]:.2f}-{best8['speed_vs_peer_iqr'][1]:.2f}, CPU time {best8['cpu_speed_vs_peer']:.2f}x), "
              f"{best8['speed_vs_fp32']:.2f}x fp32's, mean cosine {best8['mean_cosine']:.5f}")
    if best4:
        print(f"best int4 recipe with mean cosine >= 0.97 at <= 0.2x the size: {best4['recipe']}: {best4['speed_vs_fp32']:.2f}x fp32's speed "
              f"(IQR {best4['speed_vs_fp32_iqr'][0]:.2f}-{best4['speed_vs_fp32_iqr'][1]:.2f}, CPU time {best4['cpu_speed_vs_fp32']:.2f}x), "
              f"{best4['bytes'] / size:.3f}x its size, mean cosine {best4['mean_cosine']:.5f}")
    goals.append(("inference: an int8 recipe keeps mean cosine >= 0.995 and is at least as fast as quantize_dynamic per-channel",
                  best8 is not None and best8["speed_vs_peer"] >= 1.0))
    goals.append(("inference: an int4 recipe at <= 0.2x the fp32 file, mean cosine >= 0.97, is at least as fast as fp32",
                  best4 is not None and best4["speed_vs_fp32"] >= 1.0))
    storage = [r for r in rows if r.get("form") == "storage-only"]
    if storage:
        print("storage-only recipes (computed in fp32): " + ", ".join(f"{r['recipe']} {r['speed_vs_fp32']:.2f}x fp32" for r in storage))
    print()
    for g, ok in goals:
        print(f"goal {'met ' if ok else 'MISSED'}: {g}")
    with open(os.path.join(a.workdir, "results.json"), "w") as f:
        json.dump({"model_bytes": size, "build": build_rows, "inference": rows, "cpu": cpu,
                   "goals": [{"goal": g, "met": ok} for g, ok in goals]}, f, indent=2)
    if os.environ.get("BENCH_STRICT") == "1" and not all(ok for _, ok in goals):
        sys.exit(3)


if __name__ == "__main__":
    main()
