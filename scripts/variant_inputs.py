"""Inputs for the variant builder's evaluator and calibrator (scripts/evaluate-variant.py,
scripts/calibrate-variant.py): the operator's sample inputs (.npz, arrays named like the model's
inputs) or deterministic synthetic ones that a standard export accepts, split into batch-1 samples.

Synthetic integer inputs respect each input's vocabulary: an input that indexes an embedding table
(Gather on an initializer, directly or through Cast/Unsqueeze/Reshape/…; or onnxruntime's fused
EmbedLayerNormalization) gets ids below that table's row count, so token_type_ids stays within its
2-row table. Masks are ones; floats are N(0, 1).
"""
import os
import sys

import numpy as np

PASSTHROUGH = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Expand"}
# com.microsoft EmbedLayerNormalization: index input → table input.
EMBED_LAYER_NORM = {0: 2, 1: 4}


def _model_proto(path):
    """The ModelProto, parsed with onnx's generated protobuf module alone: importing the whole onnx
    package takes a second or more, paid on every evaluation."""
    import importlib.util
    spec = importlib.util.find_spec("onnx")
    pb2 = os.path.join(os.path.dirname(spec.origin), "onnx_ml_pb2.py") if spec and spec.origin else ""
    if os.path.exists(pb2):
        s = importlib.util.spec_from_file_location("edgefleet_onnx_ml_pb2", pb2)
        module = importlib.util.module_from_spec(s)
        s.loader.exec_module(module)
        m = module.ModelProto()
        with open(path, "rb") as f:
            m.ParseFromString(f.read())
        return m
    import onnx
    return onnx.load(path, load_external_data=False)


def index_bounds(path):
    """{graph input: number of rows of the smallest table it indexes}, from the initializers' shapes."""
    g = _model_proto(path).graph
    dims = {i.name: list(i.dims) for i in g.initializer}
    consumers = {}
    for n in g.node:
        for k, x in enumerate(n.input):
            consumers.setdefault(x, []).append((n, k))
    bounds = {}
    for gi in g.input:
        if gi.name in dims:
            continue
        seen, frontier, rows = set(), [gi.name], []
        while frontier:
            name = frontier.pop()
            if name in seen:
                continue
            seen.add(name)
            for n, k in consumers.get(name, []):
                if n.op_type in PASSTHROUGH and k == 0:
                    frontier.extend(n.output)
                elif n.op_type == "Gather" and k == 1 and n.input[0] in dims:
                    axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
                    d = dims[n.input[0]]
                    if d:
                        rows.append(d[axis if axis >= 0 else axis + len(d)])
                elif n.op_type == "EmbedLayerNormalization" and k in EMBED_LAYER_NORM:
                    t = n.input[EMBED_LAYER_NORM[k]] if len(n.input) > EMBED_LAYER_NORM[k] else ""
                    if t in dims and dims[t]:
                        rows.append(dims[t][0])
        if rows:
            bounds[gi.name] = int(min(rows))
    return bounds


def synthetic(sess, bounds, batch=8, seq=16, seed=20261129):
    rng = np.random.default_rng(seed)
    feed = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else (batch if k == 0 else seq) for k, d in enumerate(i.shape)]
        feed[i.name] = synthetic_array(i, shape, bounds, rng)
    return feed


def synthetic_array(i, shape, bounds, rng):
    name = i.name.lower()
    if "int" in i.type:
        dt = np.int64 if "int64" in i.type else np.int32
        if "mask" in name:
            return np.ones(shape, dt)
        if "position" in name and len(shape) >= 1:
            return np.broadcast_to(np.arange(shape[-1]), shape).astype(dt).copy()
        if i.name in bounds:
            return rng.integers(0, bounds[i.name], shape).astype(dt)
        if "type" in name or "segment" in name:
            return np.zeros(shape, dt)
        return rng.integers(0, 1000, shape).astype(dt)
    if "bool" in i.type:
        return np.ones(shape, bool)
    return rng.standard_normal(shape).astype(np.float16 if "float16" in i.type else np.float32)


def load_inputs(path, sess, bounds):
    """The operator's sample inputs: every array the model takes; a missing mask, token type or
    position input is filled the way a tokenizer would (ones, zeros, 0…n−1), anything else is an error."""
    data = dict(np.load(path))
    names = [i.name for i in sess.get_inputs()]
    feed = {k: v for k, v in data.items() if k in names}
    if not feed:
        raise ValueError(f"{path} has none of the model's inputs ({', '.join(names)}); it has {', '.join(data) or 'nothing'}")
    ref = next(iter(feed.values()))
    rng = np.random.default_rng(0)
    for i in sess.get_inputs():
        if i.name in feed:
            continue
        n = i.name.lower()
        if not any(w in n for w in ("mask", "type", "segment", "position")):
            raise ValueError(f"{path} lacks the model input '{i.name}' (it has {', '.join(feed)})")
        shape = list(ref.shape[:2]) if ref.ndim >= 2 else list(ref.shape)
        feed[i.name] = synthetic_array(i, shape, {}, rng) if "type" not in n and "segment" not in n else np.zeros(shape, ref.dtype)
        print(f"note: {path} has no '{i.name}'; filled as a tokenizer would", file=sys.stderr)
    return feed


def split_samples(feed, sess=None, limit=None):
    """Batch-1 samples (as a device serves requests), each trimmed to its attention mask when the
    mask is a prefix of ones and the model's sequence axis is free; None when the inputs do not
    share a batch axis or the model fixes the batch size."""
    arrays = list(feed.values())
    if not arrays or any(a.ndim == 0 for a in arrays):
        return None
    trim = True
    if sess is not None:
        for i in sess.get_inputs():
            if i.shape and isinstance(i.shape[0], int) and i.shape[0] != 1:
                return None
            if len(i.shape) >= 2 and isinstance(i.shape[1], int):
                trim = False
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        return None
    mask = feed.get("attention_mask") if trim else None
    out = []
    for b in range(n if limit is None else min(n, limit)):
        s = {k: v[b:b + 1] for k, v in feed.items()}
        if mask is not None and mask.ndim == 2:
            row = mask[b].astype(bool)
            length = int(row.sum())
            if length > 0 and row[:length].all():
                s = {k: (v[:, :length] if v.ndim >= 2 and v.shape[1] == mask.shape[1] else v) for k, v in s.items()}
        out.append(s)
    return out


def inputs_for(path, sess, inputs_file):
    """The feed (batched) for a model: the operator's inputs, else synthetic ones."""
    bounds = index_bounds(path) if path.endswith(".onnx") else {}
    if inputs_file:
        return load_inputs(inputs_file, sess, bounds)
    return synthetic(sess, bounds)


def plain_error(prefix, e):
    """One readable line per error: no terminal colour codes, the whole message."""
    import re
    msg = re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]", "", str(e)).strip()
    print(f"{prefix}: {type(e).__name__}: {msg}", file=sys.stderr)
    sys.exit(1)


def model_path_dir():
    return os.path.dirname(os.path.abspath(__file__))
