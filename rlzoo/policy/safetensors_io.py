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


# The reference implementation's limit: a longer "header" means the file is not safetensors.
MAX_HEADER_BYTES = 100_000_000
_REDOWNLOAD = "re-download the checkpoint"


def read_safetensors_header(path: str) -> tuple[dict, int]:
    """(tensor name -> {dtype, shape, data_offsets}, byte offset of the data);
    raises CheckpointError for a file that is not (or no longer) safetensors."""
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path} is not a safetensors file (too short); {_REDOWNLOAD}")
        (size,) = struct.unpack("<Q", raw)
        # Checked before reading: garbage in the first 8 bytes would otherwise ask for terabytes.
        if size > min(MAX_HEADER_BYTES, file_size - 8):
            raise CheckpointError(
                f"{path} is not a safetensors file or is damaged: its header length {size} exceeds the "
                f"file size {file_size} or the {MAX_HEADER_BYTES}-byte limit; {_REDOWNLOAD}"
            )
        try:
            header = json.loads(f.read(size))
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            raise CheckpointError(
                f"{path} is not a safetensors file or is damaged: its header is not JSON ({e}); {_REDOWNLOAD}"
            ) from e
    if not isinstance(header, dict):
        raise CheckpointError(
            f"{path} is not a safetensors file or is damaged: its header is not a JSON object; {_REDOWNLOAD}"
        )
    header.pop("__metadata__", None)
    return header, 8 + size


def _check_extent(path: str, name: str, info: dict, data_bytes: int) -> None:
    """Raise unless tensor `name`'s data lies inside the file and spans exactly its shape and dtype
    (a truncated file otherwise surfaces later as an unreadable reshape error)."""
    begin, end = info["data_offsets"]
    if end > data_bytes:
        raise CheckpointError(
            f"{path} is truncated: tensor {name!r} ends at data byte {end}, but the file holds only "
            f"{data_bytes} data bytes; {_REDOWNLOAD}"
        )
    if info["dtype"] in _ST_DTYPES:
        expected = int(np.prod(info["shape"])) * np.dtype(_ST_DTYPES[info["dtype"]]).itemsize
        if not 0 <= begin <= end or end - begin != expected:
            raise CheckpointError(
                f"{path} is damaged: tensor {name!r} ({info['dtype']} {info['shape']}) needs {expected} "
                f"bytes, but its data_offsets {[begin, end]} span {end - begin}; {_REDOWNLOAD}"
            )


class TensorIndex:
    """name -> lazily memory-mapped numpy array, over one or several safetensors files."""

    def __init__(self, files: Iterable[str]):
        self.entries: dict[str, tuple[str, dict, int]] = {}
        self._maps: dict[str, np.memmap] = {}
        for path in files:
            header, start = read_safetensors_header(path)
            data_bytes = os.path.getsize(path) - start
            for name, info in header.items():
                _check_extent(path, name, info, data_bytes)
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
