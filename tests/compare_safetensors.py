"""Max |a - b| over every tensor two safetensors files share (they must hold the same names and shapes).

Usage: compare_safetensors.py A.safetensors B.safetensors [TOL]  -> prints "max_abs_diff X tensors N", exit 1 above TOL.
Reads the format directly (8-byte header length, JSON header, raw little-endian data) with numpy only.
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32, "I8": np.int8, "U8": np.uint8}


def load(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=DTYPES[info["dtype"]]).reshape(info["shape"]).astype(np.float64)
    return out


a, b = load(sys.argv[1]), load(sys.argv[2])
if sorted(a) != sorted(b) or any(a[k].shape != b[k].shape for k in a):
    print("different tensors:", sorted(a), sorted(b))
    sys.exit(1)
diff = max(float(np.abs(a[k] - b[k]).max()) if a[k].size else 0.0 for k in a)
print("max_abs_diff %.3g tensors %d" % (diff, len(a)))
sys.exit(1 if len(sys.argv) > 3 and diff > float(sys.argv[3]) else 0)
