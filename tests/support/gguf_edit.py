"""Copy a GGUF with one tensor dropped or replaced, or metadata changed: broken models for error tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np

from dg_chat.gguf.reader import open_gguf
from tests.support.scripts import load_script


def rewrite(src: Path, dst: Path, *, drop: str | None = None, replace: dict[str, np.ndarray] | None = None,
            metadata: dict[str, Any] | None = None) -> Path:
    """`metadata` sets keys (None removes one); ints are written as uint32, strings as strings."""
    with open_gguf(src) as f:
        w = gguf.GGUFWriter(str(dst), f.architecture)
        kvs = {key: value for key, value in f.metadata.items() if key not in ("general.architecture", "GGUF.version")}
        kvs.update(metadata or {})
        load_script("hf_to_gguf").write_kvs(w, {key: value for key, value in kvs.items() if value is not None})
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


def split(src: Path, first: Path, parts: int, *, tensors_count: list[int] | None = None) -> list[Path]:
    """Write `src` as `parts` files the way llama.cpp's gguf-split does: all metadata in the first,
    `split.no`/`split.count`/`split.tensors.count` in each, the tensors spread over them in order.
    `first` is the first part's path; the others get `first`'s name with their own part number.
    `tensors_count`: an array to write as `split.tensors.count` instead of the count (a broken file)."""
    prefix = first.name.removesuffix(f"-00001-of-{parts:05d}.gguf")
    paths = [first.with_name(f"{prefix}-{i + 1:05d}-of-{parts:05d}.gguf") for i in range(parts)]
    first.parent.mkdir(parents=True, exist_ok=True)
    with open_gguf(src) as f:
        names = list(f.tensors)
        for index, path in enumerate(paths):
            w = gguf.GGUFWriter(str(path), f.architecture)
            kvs = {key: value for key, value in f.metadata.items()
                   if key not in ("general.architecture", "GGUF.version")}
            w.add_uint16("split.no", index)
            w.add_uint16("split.count", parts)
            if tensors_count is None:
                w.add_int32("split.tensors.count", len(names))
            else:
                w.add_array("split.tensors.count", tensors_count)
            if index == 0:
                load_script("hf_to_gguf").write_kvs(w, kvs)
            for name in names[index::parts]:
                w.add_tensor(name, np.array(f.array(name)), raw_dtype=f.tensors[name].type)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
            w.close()
    return paths
