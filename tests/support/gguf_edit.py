"""Copy a GGUF with one tensor dropped or replaced: broken models for error tests."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from dg_chat.gguf.reader import open_gguf

_TYPES = {bool: gguf.GGUFValueType.BOOL, int: gguf.GGUFValueType.UINT32, float: gguf.GGUFValueType.FLOAT32,
          str: gguf.GGUFValueType.STRING}
_ARRAYS = {"b": gguf.GGUFValueType.BOOL, "i": gguf.GGUFValueType.INT32, "u": gguf.GGUFValueType.UINT32,
           "f": gguf.GGUFValueType.FLOAT32}


def rewrite(src: Path, dst: Path, *, drop: str | None = None, replace: dict[str, np.ndarray] | None = None) -> Path:
    with open_gguf(src) as f:
        w = gguf.GGUFWriter(str(dst), f.architecture)
        for key, value in f.metadata.items():
            if key in ("general.architecture", "GGUF.version"):
                continue
            if isinstance(value, np.ndarray):
                w.add_key_value(key, value.tolist(), gguf.GGUFValueType.ARRAY, _ARRAYS[value.dtype.kind])
            elif isinstance(value, list):
                w.add_key_value(key, value, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING)
            else:
                w.add_key_value(key, value, _TYPES[type(value)])
        for name, info in f.tensors.items():
            if name == drop:
                continue
            if replace and name in replace:
                w.add_tensor(name, replace[name])
            else:
                w.add_tensor(name, np.array(f.array(name)), raw_dtype=info.type)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return dst
