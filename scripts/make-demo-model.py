#!/usr/bin/env python3
"""Write a small deterministic MLP as safetensors files in four number formats.

    python3 scripts/make-demo-model.py OUTDIR [--finetune]

Writes OUTDIR/model-{fp32,fp16,int8,int4}.safetensors. With --finetune, the same model after a
fine-tune of its last layer (every weight of layers.2 moved by about 1% of itself, seeded), as a
second release for the demo's delta packages and staged rollout. The weights come from a seeded PRNG, so
every run on every machine writes byte-identical files. Standard library only.

Tensors (PyTorch nn.Linear layout, weight shape [out, in]):
    layers.{0,1,2}.weight   512 -> 1024 -> 1024 -> 512
    layers.{0,1,2}.bias

Quantized formats keep the tensor names and add scales:
    int8  weight: I8 [out, in], symmetric per output channel (q = round(w / scale), |q| <= 127)
          weight_scale: F32 [out]; bias: F32
    int4  weight: U8 [out, in/2], symmetric per block of 32 along `in` (q in -8..7), stored as
          q + 8 in a nibble, element 2k in the low nibble and 2k+1 in the high nibble
          weight_scale: F16 [out, in/32]; bias: F16
Dequantize with w = q * scale.
"""

import json
import math
import os
import random
import struct
import sys
from array import array

SEED = 20240601
LAYERS = [(512, 1024), (1024, 1024), (1024, 512)]  # (in, out)
INT4_BLOCK = 32

DTYPE_SIZE = {"F32": 4, "F16": 2, "I8": 1, "U8": 1}


def make_weights():
    """Uniform(-1/sqrt(in), 1/sqrt(in)), as nn.Linear initialises, from a fixed seed."""
    rng = random.Random(SEED)
    r = rng.random
    tensors = []
    for i, (fan_in, fan_out) in enumerate(LAYERS):
        bound = 1.0 / math.sqrt(fan_in)
        w = [(r() * 2.0 - 1.0) * bound for _ in range(fan_in * fan_out)]
        b = [(r() * 2.0 - 1.0) * bound for _ in range(fan_out)]
        # Round through float32 once so every format starts from the same values.
        w = array("f", w).tolist()
        b = array("f", b).tolist()
        tensors.append((i, fan_in, fan_out, w, b))
    return tensors


def f32_bytes(values):
    a = array("f", values)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def f16_bytes(values):
    return struct.pack("<%de" % len(values), *values)


def i8_bytes(values):
    a = array("b", values)
    return a.tobytes()


def quantize_int8(w, rows, cols):
    q = []
    scales = []
    for r in range(rows):
        row = w[r * cols:(r + 1) * cols]
        m = max(max(row), -min(row))
        scale = m / 127.0 if m > 0 else 1.0
        inv = 1.0 / scale
        q.extend(max(-127, min(127, round(x * inv))) for x in row)
        scales.append(scale)
    return q, scales


def quantize_int4(w, rows, cols):
    """Returns (packed bytes, scales) with one scale per block of INT4_BLOCK along each row."""
    packed = bytearray(rows * cols // 2)
    scales = []
    pos = 0
    for start in range(0, rows * cols, INT4_BLOCK):
        block = w[start:start + INT4_BLOCK]
        m = max(max(block), -min(block))
        # Scale stored as fp16: compute with the rounded value so q * scale is what readers get.
        scale = struct.unpack("<e", struct.pack("<e", m / 7.0))[0] if m > 0 else 1.0
        if scale == 0.0:
            scale = 1.0
        inv = 1.0 / scale
        for k in range(0, INT4_BLOCK, 2):
            lo = max(-8, min(7, round(block[k] * inv))) + 8
            hi = max(-8, min(7, round(block[k + 1] * inv))) + 8
            packed[pos] = lo | (hi << 4)
            pos += 1
        scales.append(scale)
    return bytes(packed), scales


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, dtype, shape, raw bytes). Layout follows the reference writer:
    larger dtypes first so every tensor's offset is aligned to its element size, and the header
    is padded with spaces so the data starts at an 8-byte boundary."""
    ordered = sorted(tensors, key=lambda t: (-DTYPE_SIZE[t[1]], t[0]))
    header = {"__metadata__": metadata}
    offset = 0
    for name, dtype, shape, raw in ordered:
        expected = DTYPE_SIZE[dtype] * math.prod(shape)
        if len(raw) != expected:
            raise ValueError("%s: %d bytes, shape %s of %s needs %d" % (name, len(raw), shape, dtype, expected))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, _, raw in ordered:
            f.write(raw)
    os.replace(tmp, path)


def finetune_last_layer(layers):
    rng = random.Random(SEED + 1)
    i, fin, fout, w, b = layers[-1]
    w = array("f", [x * (1.0 + rng.gauss(0.0, 0.01)) for x in w]).tolist()
    b = array("f", [x + rng.gauss(0.0, 0.001) for x in b]).tolist()
    return layers[:-1] + [(i, fin, fout, w, b)]


def main(argv):
    args = [a for a in argv[1:] if a != "--finetune"]
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: make-demo-model.py OUTDIR [--finetune]", file=sys.stderr)
        return 2
    outdir = args[0]
    os.makedirs(outdir, exist_ok=True)
    layers = make_weights()
    finetuned = "--finetune" in argv[1:]
    if finetuned:
        layers = finetune_last_layer(layers)

    def meta(dtype, **extra):
        m = {"format": "pt", "edgefleet.dtype": dtype, "edgefleet.model": "demo-mlp",
             "edgefleet.seed": str(SEED), "edgefleet.version": "2" if finetuned else "1"}
        m.update(extra)
        return m

    files = {}

    fp32 = []
    for i, fin, fout, w, b in layers:
        fp32.append(("layers.%d.weight" % i, "F32", (fout, fin), f32_bytes(w)))
        fp32.append(("layers.%d.bias" % i, "F32", (fout,), f32_bytes(b)))
    files["fp32"] = (fp32, meta("fp32"))

    fp16 = []
    for i, fin, fout, w, b in layers:
        fp16.append(("layers.%d.weight" % i, "F16", (fout, fin), f16_bytes(w)))
        fp16.append(("layers.%d.bias" % i, "F16", (fout,), f16_bytes(b)))
    files["fp16"] = (fp16, meta("fp16"))

    int8 = []
    for i, fin, fout, w, b in layers:
        q, scales = quantize_int8(w, fout, fin)
        int8.append(("layers.%d.weight" % i, "I8", (fout, fin), i8_bytes(q)))
        int8.append(("layers.%d.weight_scale" % i, "F32", (fout,), f32_bytes(scales)))
        int8.append(("layers.%d.bias" % i, "F32", (fout,), f32_bytes(b)))
    files["int8"] = (int8, meta("int8", **{"edgefleet.quantization": "symmetric-per-channel"}))

    int4 = []
    for i, fin, fout, w, b in layers:
        packed, scales = quantize_int4(w, fout, fin)
        int4.append(("layers.%d.weight" % i, "U8", (fout, fin // 2), packed))
        int4.append(("layers.%d.weight_scale" % i, "F16", (fout, fin // INT4_BLOCK), f16_bytes(scales)))
        int4.append(("layers.%d.bias" % i, "F16", (fout,), f16_bytes(b)))
    files["int4"] = (int4, meta("int4", **{
        "edgefleet.quantization": "symmetric-block",
        "edgefleet.block_size": str(INT4_BLOCK),
        "edgefleet.packing": "offset8-low-nibble-first",
    }))

    for dtype, (tensors, metadata) in files.items():
        path = os.path.join(outdir, "model-%s.safetensors" % dtype)
        write_safetensors(path, tensors, metadata)
        print("%-40s %10d bytes" % (path, os.path.getsize(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
