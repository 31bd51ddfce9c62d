#!/usr/bin/env python3
"""Default calibrator of the variant builder: the activation ranges that the `smooth` recipe step
moves into the weights.

    calibrate-variant.py [--inputs SAMPLES.npz] MODEL.onnx
    calibrate-variant.py [--inputs SAMPLES.npz] --agreement BASE.onnx VARIANT.onnx [VARIANT.onnx …]

Runs MODEL under onnxruntime, one sample at a time, and prints one JSON line:
{"samples": N, "activations": {"tensor": [largest |x| per channel (last axis)], …},
"mean_squares": {"tensor": [mean x² per channel], …}} for every activation that a MatMul multiplies
by an initializer. Inputs: SAMPLES.npz (also from
$EDGEFLEET_CALIBRATION_INPUTS) — calibrate on inputs like the ones the model will serve, and keep
them apart from the evaluator's golden inputs — else synthetic inputs that respect each input's
vocabulary (variant_inputs.py), 32 samples. Errors: one plain line on standard error, exit 1.

With --agreement (the `mixed` recipe step's measurement of its candidate variants), runs BASE and
each VARIANT on the same calibration inputs, one sample at a time, and prints
{"samples": N, "mean_cosine": [one per VARIANT, in order]}: the mean over samples and outputs of the
cosine with BASE's output, as scripts/evaluate-variant.py measures agreement.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import variant_inputs  # noqa: E402


def main():
    import onnx
    import onnxruntime as ort
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", default=os.environ.get("EDGEFLEET_CALIBRATION_INPUTS"))
    ap.add_argument("--agreement", action="store_true")
    ap.add_argument("model")
    ap.add_argument("variants", nargs="*")
    a = ap.parse_args()
    if a.agreement:
        return agreement(a.model, a.variants, a.inputs)
    m = onnx.load(a.model)
    g = m.graph
    inits = {i.name for i in g.initializer}
    acts = sorted({n.input[0] for n in g.node if n.op_type == "MatMul" and n.domain in ("", "ai.onnx") and len(n.input) == 2
                   and n.input[1] in inits and n.input[0] not in inits})
    existing = {o.name for o in g.output}
    for x in acts:
        if x not in existing:
            g.output.append(onnx.helper.make_empty_tensor_value_info(x))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    if a.inputs:
        feed = variant_inputs.load_inputs(a.inputs, sess, {})
    else:
        feed = variant_inputs.synthetic(sess, variant_inputs.index_bounds(a.model), batch=32, seq=24, seed=7)
    samples = variant_inputs.split_samples(feed, sess) or [feed]
    ranges, squares, rows = {}, {}, {}
    for s in samples:
        for x, v in zip(acts, sess.run(acts, s)):
            v = np.asarray(v, np.float64)
            v = v.reshape(-1, v.shape[-1]) if v.ndim else v.reshape(1, 1)
            m = np.abs(v).max(0)
            ranges[x] = np.maximum(ranges[x], m) if x in ranges else m
            squares[x] = squares.get(x, 0) + (v * v).sum(0)
            rows[x] = rows.get(x, 0) + v.shape[0]
    print(json.dumps({"samples": len(samples), "activations": {k: [float(f) for f in v] for k, v in ranges.items()},
                      "mean_squares": {k: [float(f) for f in squares[k] / max(rows[k], 1)] for k in ranges}}))


def agreement(base_path, variants, inputs):
    import importlib.util
    spec = importlib.util.spec_from_file_location("evaluate_variant", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                                   "evaluate-variant.py"))
    ev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev)
    base = ev.session(base_path, "")
    if inputs:
        feed = variant_inputs.load_inputs(inputs, base, variant_inputs.index_bounds(base_path))
    else:
        feed = variant_inputs.synthetic(base, variant_inputs.index_bounds(base_path), batch=32, seq=24, seed=7)
    samples = variant_inputs.split_samples(feed, base) or [feed]
    refs = [base.run(None, s) for s in samples]
    means = []
    for path in variants:
        v = ev.session(path, "")
        every = []
        for s, ref in zip(samples, refs):
            for r, y in zip(ref, v.run(None, s)):
                every.extend(ev.cosine_rows(r, y).tolist())
        means.append(float(np.mean(every)))
    print(json.dumps({"samples": len(samples), "mean_cosine": means}))


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException as e:
        variant_inputs.plain_error("calibrate-variant", e)
