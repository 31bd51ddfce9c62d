#!/usr/bin/env python3
"""Default evaluator of the variant builder: how closely a variant's outputs agree with its base's,
and how fast it runs next to it.

    evaluate-variant.py [--inputs SAMPLES.npz] [--rounds N] [--no-speed] BASE VARIANT

Runs BASE and VARIANT under onnxruntime (CPU) on the same inputs and prints one JSON line:
{"samples", "mean_cosine", "min_cosine", "top1_agreement", "detail", "speed"}.

Agreement: one sample at a time (batch 1, trimmed to its attention mask), as a device serves
requests: compute-quantized variants pick their activation ranges per input, so in a padded batch
one sample's output would depend on its neighbours. Cosine is taken per sample over each output
flattened, top-1 agreement compares the arg-max over the last axis. detail also has the batched
figure (padding positions excluded). Models without a common batch axis are compared batched.

Speed: the same samples, batch 1, base and variant interleaved round by round (the machine may be
shared: the ratio holds when absolute times move), with one thread and with all threads; median and
p95 per inference; peak resident memory of a process that loads each model and runs it; the CPU
(model, architecture, ISA flags) and the runtime version. --rounds (or $EDGEFLEET_EVAL_ROUNDS,
default 5) sets the rounds; --no-speed (or $EDGEFLEET_EVAL_SPEED=0) skips timing.

Inputs: SAMPLES.npz (arrays named like the model's inputs; also from $EDGEFLEET_GOLDEN_INPUTS), else
deterministic synthetic inputs that respect each input's vocabulary (see variant_inputs.py).
safetensors files are run through the BERT graph of minilm_onnx.py (dequantizing builder variants).
Errors are printed as one plain line on standard error, exit status 1.
Needs numpy, onnx and onnxruntime (`make venv`).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import variant_inputs  # noqa: E402

ISA_FLAGS = {"sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "asimddp", "asimdhp", "i8mm", "bf16",
             "sve", "sve2", "sme"}


def session(path, fmt, threads=0):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if fmt == "safetensors" or path.endswith(".safetensors"):
        import minilm_onnx
        meta, tensors = minilm_onnx.read_safetensors(path)
        if "embeddings.word_embeddings.weight" not in tensors:
            raise ValueError("safetensors other than a BERT encoder need an ONNX graph; evaluate the ONNX export")
        model = minilm_onnx.build_model(minilm_onnx.dequantize_variant(meta, tensors))
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def cosine_rows(r, y):
    r = np.asarray(r, np.float64)
    y = np.asarray(y, np.float64)
    r = r.reshape(r.shape[0], -1) if r.ndim > 1 else r.reshape(1, -1)
    y = y.reshape(r.shape)
    num = (r * y).sum(1)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(y, axis=1)
    return np.where(den > 0, num / np.maximum(den, 1e-300), np.where(np.abs(r).sum(1) == np.abs(y).sum(1), 1.0, 0.0))


def batched_agreement(base, variant, feed):
    """The whole feed as one batch; per-token outputs count only where the attention mask is set."""
    ref, out = base.run(None, feed), variant.run(None, feed)
    mask = feed.get("attention_mask")
    cosines = []
    for r, y in zip(ref, out):
        r, y = np.asarray(r, np.float64), np.asarray(y, np.float64)
        if mask is not None and r.ndim >= 2 and r.shape[:2] == mask.shape:
            keep = mask.astype(bool)
            r = np.stack([np.where(keep[i].reshape((-1,) + (1,) * (r.ndim - 2)), r[i], 0) for i in range(r.shape[0])])
            y = np.stack([np.where(keep[i].reshape((-1,) + (1,) * (y.ndim - 2)), y[i], 0) for i in range(y.shape[0])])
        cosines.extend(cosine_rows(r, y).tolist())
    return ref, out, cosines


def agreement(base, variant, feed, samples):
    names = [o.name for o in base.get_outputs()]
    detail = {}
    ref, out, batched = batched_agreement(base, variant, feed)
    detail["batched.mean_cosine"] = float(np.mean(batched))
    if samples is None:
        per_output = [(ref[k], out[k]) for k in range(len(names))]
        cos = {n: cosine_rows(*per_output[k]) for k, n in enumerate(names)}
        top = {n: [(np.asarray(per_output[k][0]).argmax(-1) == np.asarray(per_output[k][1]).argmax(-1)).mean()] for k, n in enumerate(names)}
        count = int(np.asarray(ref[0]).shape[0]) if np.asarray(ref[0]).ndim else 1
    else:
        cos = {n: [] for n in names}
        top = {n: [] for n in names}
        for s in samples:
            ref, out = base.run(None, s), variant.run(None, s)
            for k, n in enumerate(names):
                cos[n].extend(cosine_rows(ref[k], out[k]).tolist())
                r, y = np.asarray(ref[k]), np.asarray(out[k])
                if r.ndim:
                    top[n].append(float((r.argmax(-1) == y.argmax(-1)).mean()))
        count = len(samples)
    every = []
    for n in names:
        every.extend(list(cos[n]))
        detail[n + ".mean_cosine"] = float(np.mean(cos[n]))
        if top[n]:
            detail[n + ".top1_agreement"] = float(np.mean(top[n]))
    tops = [detail[n + ".top1_agreement"] for n in names if n + ".top1_agreement" in detail]
    return {"samples": count, "mean_cosine": float(np.mean(every)), "min_cosine": float(np.min(every)),
            "top1_agreement": float(np.mean(tops)) if tops else None, "detail": detail}


def cpu_info():
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "Hardware", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model or platform.processor() or "unknown", "architecture": platform.machine(),
            "cores": os.cpu_count() or 1, "flags": sorted(flags & ISA_FLAGS)}


def peak_memory(path, fmt, sample_file):
    """Peak RSS (bytes) of a child process that loads the model and runs three inferences: its own
    VmHWM (ru_maxrss would carry the parent's size over the fork)."""
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--peak-child", sample_file, path, fmt or "-"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"peak-memory run of {path} failed: {p.stderr.strip()}")
    return int(p.stdout.strip().splitlines()[-1])


def speed(base_path, variant_path, fmt, samples, rounds):
    import onnxruntime as ort
    cores = os.cpu_count() or 1
    timings = []
    for threads in sorted({1, cores}):
        sessions = [session(base_path, fmt, threads), session(variant_path, fmt, threads)]
        for s in sessions:
            for x in samples:
                s.run(None, x)
        times = [[], []]
        for _ in range(rounds):
            for k, s in enumerate(sessions):
                for x in samples:
                    t0 = time.perf_counter()
                    s.run(None, x)
                    times[k].append((time.perf_counter() - t0) * 1e3)
        b, v = np.asarray(times[0]), np.asarray(times[1])
        timings.append({"threads": threads, "baseMedianMs": float(np.median(b)), "baseP95Ms": float(np.percentile(b, 95)),
                        "variantMedianMs": float(np.median(v)), "variantP95Ms": float(np.percentile(v, 95)),
                        "speedup": float(np.median(b) / np.median(v))})
    result = {"batch": 1, "runs": rounds * len(samples), "timings": timings, "runtime": "onnxruntime " + ort.__version__, "cpu": cpu_info()}
    with tempfile.TemporaryDirectory() as d:
        sample_file = os.path.join(d, "sample.npz")
        np.savez(sample_file, **samples[0])
        result["basePeakBytes"] = peak_memory(base_path, fmt, sample_file)
        result["variantPeakBytes"] = peak_memory(variant_path, fmt, sample_file)
    return result


def peak_child(sample_file, path, fmt):
    s = session(path, "" if fmt == "-" else fmt, 1)
    feed = dict(np.load(sample_file))
    for _ in range(3):
        s.run(None, feed)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                print(int(line.split()[1]) * 1024)
                return
    import resource
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--peak-child":
        peak_child(*sys.argv[2:])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", default=os.environ.get("EDGEFLEET_GOLDEN_INPUTS"))
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("EDGEFLEET_EVAL_ROUNDS", "5")))
    ap.add_argument("--no-speed", action="store_true", default=os.environ.get("EDGEFLEET_EVAL_SPEED") == "0")
    ap.add_argument("base")
    ap.add_argument("variant")
    a = ap.parse_args()
    fmt = os.environ.get("EDGEFLEET_FORMAT", "")
    base = session(a.base, fmt)
    variant = session(a.variant, fmt)
    feed = variant_inputs.inputs_for(a.base, base, a.inputs)
    samples = variant_inputs.split_samples(feed, base)
    result = agreement(base, variant, feed, samples)
    if not a.no_speed and a.rounds > 0:
        result["speed"] = speed(a.base, a.variant, fmt, samples[:32] if samples else [feed], a.rounds)
        if not samples:
            result["speed"]["batch"] = int(np.asarray(next(iter(feed.values()))).shape[0])
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException as e:  # one plain line for fleetctl, never a colour-coded traceback
        variant_inputs.plain_error("evaluate-variant", e)
