#!/usr/bin/env python3
"""Builds the benchmark's (base, target) pairs from a real safetensors model (all-MiniLM-L6-v2).

    make_pairs.py MODEL.safetensors OUTDIR [--seed N]

writes OUTDIR/<pair>/{base,target}.safetensors and OUTDIR/pairs.json (name, what, largest tensor).
Needs numpy; the safetensors reader/writer is here (no other package).
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "I8": np.int8, "U8": np.uint8,
          "F64": np.float64, "I16": np.int16}
NAMES = {np.dtype(v).str: k for k, v in DTYPES.items()}


def read(path):
    """Returns (metadata dict or None, ordered list of (name, array))."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", None)
    start = 8 + n
    items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    tensors = []
    for name, e in items:
        a, b = e["data_offsets"]
        arr = np.frombuffer(raw[start + a:start + b], dtype=DTYPES[e["dtype"]]).reshape(e["shape"])
        tensors.append((name, arr))
    return meta, tensors


def write(path, tensors, meta=None):
    header = {}
    if meta is not None:
        header["__metadata__"] = meta
    offset = 0
    for name, arr in tensors:
        nbytes = arr.nbytes
        header[name] = {"dtype": NAMES[np.dtype(arr.dtype).str], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, arr in tensors:
            f.write(np.ascontiguousarray(arr).tobytes())


def nudge(arr, rel, rng):
    """A fine-tune step's worth of change: each weight scaled by (1 + N(0, rel))."""
    noise = rng.normal(0.0, rel, arr.shape)
    return (arr.astype(np.float64) * (1.0 + noise)).astype(np.float32)


def quantize(tensors):
    """Per-channel (per output row) symmetric int8 for every 2-D float weight: NAME.weight becomes
    NAME.weight_int8 (I8) and NAME.weight_scale (F32, one per row); other tensors stay as they are."""
    out = []
    for name, arr in tensors:
        if arr.dtype == np.float32 and arr.ndim == 2:
            scale = np.abs(arr).max(axis=1) / 127.0
            scale[scale == 0] = 1.0
            q = np.clip(np.rint(arr / scale[:, None]), -127, 127).astype(np.int8)
            base = name[:-len(".weight")] if name.endswith(".weight") else name
            out.append((base + ".weight_int8", q))
            out.append((base + ".weight_scale", scale.astype(np.float32)))
        else:
            out.append((name, arr))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=20261129)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    meta, tensors = read(args.model)
    meta = meta or {"format": "pt"}
    floats = [n for n, a in tensors if a.dtype == np.float32]
    last = max(int(n.split(".")[2]) for n in floats if n.startswith("encoder.layer."))
    pairs = []

    def emit(name, what, base, target, base_meta=meta, target_meta=meta):
        d = os.path.join(args.outdir, name)
        os.makedirs(d, exist_ok=True)
        write(os.path.join(d, "base.safetensors"), base, base_meta)
        write(os.path.join(d, "target.safetensors"), target, target_meta)
        largest = max(a.nbytes for _, a in base + target)
        pairs.append({"name": name, "what": what, "largest_tensor": int(largest)})
        print(f"  {name}: {what}", file=sys.stderr)

    # Per-tensor relative noise for the full fine-tune, log-uniform in [1e-4, 1e-3].
    rel = {n: float(10 ** rng.uniform(-4, -3)) for n in floats}
    tuned = [(n, nudge(a, rel[n], rng) if n in rel else a) for n, a in tensors]

    # 1. Only the last encoder layer retrained: its weights move by ~1e-3 relative.
    prefix = f"encoder.layer.{last}."
    emit("1-last-layer", f"{prefix}* nudged by 1e-3 relative, everything else unchanged", tensors,
         [(n, nudge(a, 1e-3, rng) if n.startswith(prefix) and a.dtype == np.float32 else a) for n, a in tensors])
    # 2. Every weight nudged (a few epochs of fine-tuning).
    emit("2-full-finetune", "every float weight nudged, relative noise 1e-4..1e-3 per tensor", tensors, tuned)
    # 3. Metadata only.
    emit("3-metadata", "safetensors __metadata__ changed, weights identical", tensors, tensors,
         target_meta={**meta, "finetuned_from": "all-MiniLM-L6-v2", "dataset": "customer-tickets-2026-11", "epoch": "3"})
    # 4. Recipe change fp32 -> int8 (per-channel symmetric), names changed.
    emit("4-fp32-to-int8", "fp32 model -> per-channel int8 (I8 + F32 scales), tensors renamed", tensors, quantize(tensors))
    # 5. int8 fine-tune: int8 of the original vs int8 of the nudged weights.
    emit("5-int8-finetune", "int8 quantization of the model vs of its full fine-tune (pair 2)", quantize(tensors), quantize(tuned))
    # 6. Retrained from scratch: unrelated weights with each tensor's mean and std.
    retrain = [(n, rng.normal(a.mean(), a.std() + 1e-12, a.shape).astype(np.float32) if a.dtype == np.float32 else a)
               for n, a in tensors]
    emit("6-retrain", "every float tensor replaced by unrelated random weights of the same shape", tensors, retrain)

    with open(os.path.join(args.outdir, "pairs.json"), "w") as f:
        json.dump(pairs, f, indent=1)


if __name__ == "__main__":
    main()
