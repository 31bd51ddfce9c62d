#!/usr/bin/env python3
"""Default evaluator of the variant builder: how closely a variant's outputs agree with its base's.

    evaluate-variant.py [--inputs GOLDEN.npz] BASE VARIANT

Runs BASE and VARIANT under onnxruntime (CPU) on the same inputs and prints one JSON line:
{"samples", "mean_cosine", "min_cosine", "top1_agreement", "detail"}. Cosine is taken per sample
(the first axis) over each output flattened; top-1 agreement compares the arg-max over the last axis.
When the inputs have an attention_mask [batch, seq], per-token outputs count only unpadded positions.

Inputs: GOLDEN.npz (arrays named like the model's inputs; also from $EDGEFLEET_GOLDEN_INPUTS), else
deterministic synthetic inputs from the input specs (ids in [0, 1000), masks of ones, floats N(0, 1)).
safetensors files are run through the BERT graph of minilm_onnx.py (dequantizing builder variants),
so all-MiniLM-L6-v2 in safetensors can be evaluated too; other safetensors models need an ONNX graph.
Needs numpy and onnxruntime (`make venv`).
"""
import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def session(path, fmt):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if fmt == "safetensors" or path.endswith(".safetensors"):
        import minilm_onnx
        meta, tensors = minilm_onnx.read_safetensors(path)
        if "embeddings.word_embeddings.weight" not in tensors:
            raise SystemExit("evaluate-variant: safetensors other than a BERT encoder need an ONNX graph; evaluate the ONNX export")
        model = minilm_onnx.build_model(minilm_onnx.dequantize_variant(meta, tensors))
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def synthetic(sess, batch=8, seq=16):
    rng = np.random.default_rng(20261129)
    feed = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else (batch if k == 0 else seq) for k, d in enumerate(i.shape)]
        if "int" in i.type:
            dt = np.int64 if "int64" in i.type else np.int32
            feed[i.name] = np.ones(shape, dt) if "mask" in i.name else rng.integers(0, 1000, shape).astype(dt)
        else:
            feed[i.name] = rng.standard_normal(shape).astype(np.float16 if "float16" in i.type else np.float32)
    return feed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", default=os.environ.get("EDGEFLEET_GOLDEN_INPUTS"))
    ap.add_argument("base")
    ap.add_argument("variant")
    a = ap.parse_args()
    fmt = os.environ.get("EDGEFLEET_FORMAT", "")
    base = session(a.base, fmt)
    variant = session(a.variant, fmt)
    feed = dict(np.load(a.inputs)) if a.inputs else synthetic(base)
    names = [i.name for i in base.get_inputs()]
    feed = {k: v for k, v in feed.items() if k in names}
    ref = base.run(None, feed)
    out = variant.run(None, feed)
    cosines, top1, detail = [], [], {}
    mask = feed.get("attention_mask")
    for k, (o, r, y) in enumerate(zip(base.get_outputs(), ref, out)):
        r, y = np.asarray(r, np.float64), np.asarray(y, np.float64)
        if mask is not None and r.ndim >= 2 and r.shape[:2] == mask.shape:
            # Padding positions carry no meaning: per-token outputs count only where the mask is set.
            keep = mask.astype(bool)
            r = np.stack([np.where(keep[i].reshape((-1,) + (1,) * (r.ndim - 2)), r[i], 0) for i in range(r.shape[0])])
            y = np.stack([np.where(keep[i].reshape((-1,) + (1,) * (y.ndim - 2)), y[i], 0) for i in range(y.shape[0])])
        r = r.reshape(r.shape[0], -1) if r.ndim > 1 else r.reshape(1, -1)
        y = y.reshape(r.shape)
        num = (r * y).sum(1)
        den = np.linalg.norm(r, axis=1) * np.linalg.norm(y, axis=1)
        cos = np.where(den > 0, num / np.maximum(den, 1e-300), np.where(np.abs(r).sum(1) == np.abs(y).sum(1), 1.0, 0.0))
        cosines.extend(cos.tolist())
        detail[o.name + ".mean_cosine"] = float(cos.mean())
        ro, yo = np.asarray(ref[k]), np.asarray(out[k])
        same = ro.argmax(-1) == yo.argmax(-1)
        if mask is not None and same.ndim >= 2 and same.shape[:2] == mask.shape:
            same = same[mask.astype(bool)]
        agree = same.mean()
        top1.append(float(agree))
        detail[o.name + ".top1_agreement"] = float(agree)
    print(json.dumps({"samples": int(ref[0].shape[0]) if ref[0].ndim else 1, "mean_cosine": float(np.mean(cosines)),
                      "min_cosine": float(np.min(cosines)), "top1_agreement": float(np.mean(top1)), "detail": detail}))


if __name__ == "__main__":
    main()
