#!/usr/bin/env python3
"""Writes the seed corpora in Fuzz/Corpus (checked in; run again only to change them):

    python3 Fuzz/make-seeds.py FLEETCTL FUZZ_METADATA_BINARY

Corpus/delta-base.safetensors is the fixed base FuzzDelta applies packages to; Corpus/FuzzDelta has
one package per method against it; Corpus/FuzzTensorLayout and Corpus/FuzzCompressionReaders a small
safetensors and a small ONNX file; Corpus/FuzzMetadata what FuzzMetadata writes with FUZZ_WRITE_SEEDS (signed by its fixture keys)."""
import json, os, random, struct, subprocess, sys, tempfile

here = os.path.dirname(os.path.abspath(__file__))
corpus = os.path.join(here, "Corpus")
fleetctl, fuzz_metadata = sys.argv[1], sys.argv[2]
rng = random.Random(6)


def safetensors(tensors):
    """tensors: list of (name, dtype, shape, bytes)"""
    header, offset, blobs = {}, 0, []
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def f32(n, scale=1.0):
    return struct.pack("<%df" % n, *[rng.gauss(0, scale) for _ in range(n)])


def i8(n):
    return bytes(rng.randrange(256) for _ in range(n))


w0, b0, w1 = f32(32 * 16), f32(32, 0.1), i8(16 * 32)
base = safetensors([("layers.0.weight", "F32", [32, 16], w0), ("layers.0.bias", "F32", [32], b0),
                    ("layers.1.weight", "I8", [16, 32], w1), ("layers.1.weight_scale", "F32", [16], f32(16, 0.01))])
w1t = bytearray(w1)
for i in range(0, len(w1t), 7):
    w1t[i] = (w1t[i] + 1) % 256
target = safetensors([("layers.0.weight", "F32", [32, 16], w0), ("layers.0.bias", "F32", [32], f32(32, 0.1)),
                      ("layers.1.weight", "I8", [16, 32], bytes(w1t)), ("layers.1.weight_scale", "F32", [16], f32(16, 0.01))])

for d in ["FuzzDelta", "FuzzTensorLayout", "FuzzMetadata", "FuzzCompressionReaders"]:
    os.makedirs(os.path.join(corpus, d), exist_ok=True)
with open(os.path.join(corpus, "delta-base.safetensors"), "wb") as f:
    f.write(base)
with tempfile.TemporaryDirectory() as tmp:
    t = os.path.join(tmp, "target.safetensors")
    with open(t, "wb") as f:
        f.write(target)
    for method in ["tensor", "zstd-patch", "full"]:
        subprocess.run([fleetctl, "delta", "create", "--base", os.path.join(corpus, "delta-base.safetensors"), "--target", t,
                        "--out", os.path.join(corpus, "FuzzDelta", method + ".efdelta"), "--method", method],
                       check=True, stdout=subprocess.DEVNULL)


def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    return key + (varint(payload) if wire == 0 else varint(len(payload)) + payload)


def tensor_proto(name, dims, data_type, raw):
    return b"".join(field(1, 0, d) for d in dims) + field(2, 0, data_type) + field(8, 2, name.encode()) + field(9, 2, raw)


graph = field(5, 2, tensor_proto("w", [4, 8], 1, f32(32))) + field(5, 2, tensor_proto("b", [8], 1, f32(8))) + field(2, 2, b"g")
onnx = field(1, 0, 8) + field(7, 2, graph)
for d in ["FuzzTensorLayout", "FuzzCompressionReaders"]:
    with open(os.path.join(corpus, d, "tiny.safetensors"), "wb") as f:
        f.write(base)
    with open(os.path.join(corpus, d, "tiny.onnx"), "wb") as f:
        f.write(onnx)
subprocess.run([fuzz_metadata], env=dict(os.environ, FUZZ_WRITE_SEEDS=os.path.join(corpus, "FuzzMetadata")), check=True)
print("seeds written to", corpus)
