"""Copy a GGUF with one tensor dropped or replaced: broken models for error tests."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from dg_chat.gguf.reader import open_gguf
from tests.support.scripts import load_script


def rewrite(src: Path, dst: Path, *, drop: str | None = None, replace: dict[str, np.ndarray] | None = None) -> Path:
    with open_gguf(src) as f:
        w = gguf.GGUFWriter(str(dst), f.architecture)
        load_script("hf_to_gguf").write_kvs(w, {key: value for key, value in f.metadata.items()
                                            if key not in ("general.architecture", "GGUF.version")})
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
