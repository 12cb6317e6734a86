"""safetensors files, read by memory map and written directly (bfloat16
included), without the `safetensors` package's torch or flax bindings."""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Iterable

import ml_dtypes
import numpy as np


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into this model (with the reason)."""


_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items()}


def read_safetensors_header(path: str) -> tuple[dict, int]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path} is not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", raw)
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header, 8 + size


class TensorIndex:
    """name -> lazily memory-mapped numpy array, over one or several safetensors files."""

    def __init__(self, files: Iterable[str]):
        self.entries: dict[str, tuple[str, dict, int]] = {}
        self._maps: dict[str, np.memmap] = {}
        for path in files:
            header, start = read_safetensors_header(path)
            for name, info in header.items():
                self.entries[name] = (path, info, start)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.entries[name][1]["shape"])

    def array(self, name: str) -> np.ndarray:
        path, info, start = self.entries[name]
        if info["dtype"] not in _ST_DTYPES:
            raise CheckpointError(f"tensor {name} in {path} has unsupported dtype {info['dtype']}")
        if path not in self._maps:
            self._maps[path] = np.memmap(path, dtype=np.uint8, mode="r")
        begin, end = info["data_offsets"]
        buffer = self._maps[path][start + begin:start + end]
        return buffer.view(_ST_DTYPES[info["dtype"]]).reshape(info["shape"])


def write_safetensors(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write numpy arrays (bfloat16 via ml_dtypes) as one safetensors file."""
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    arrays = {}
    for name, value in tensors.items():
        value = np.ascontiguousarray(value)
        if value.dtype not in _ST_NAMES:
            raise CheckpointError(f"cannot write tensor {name} of dtype {value.dtype}")
        header[name] = {"dtype": _ST_NAMES[value.dtype], "shape": list(value.shape),
                        "data_offsets": [offset, offset + value.nbytes]}
        offset += value.nbytes
        arrays[name] = value
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for value in arrays.values():
            f.write(value.tobytes())
    os.replace(tmp, path)
