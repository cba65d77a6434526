"""A fast, validating GGUF reader: header, metadata, tensor index, memory-mapped tensor data.

Why not `gguf.GGUFReader`: it builds a numpy object per array element and needs ~30-40 s to
open a Gemma 4 vocabulary (262,144 tokens, 514,906 merges); this reader walks the header with
`struct` and decodes string arrays in one pass (about a second).

Every violation of the format raises `GGUFError` with a one-line message naming the file.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from dg_chat.errors import DgChatError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
MAX_ARRAY_NESTING = 8
MAX_NESTED_ARRAYS = 65_536
"""Most arrays in one array of arrays: no model has such metadata, and a lying count of empty
arrays in a large file would otherwise build millions of them (gigabytes) before failing."""
SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
"""How llama.cpp's gguf-split names the parts of a split model (llama_split_path)."""

# GGUF value types -> (struct code, numpy dtype)
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("B", "<u1"), 1: ("b", "<i1"), 2: ("H", "<u2"), 3: ("h", "<i2"), 4: ("I", "<u4"),
    5: ("i", "<i4"), 6: ("f", "<f4"), 7: ("?", "?"), 10: ("Q", "<u8"), 11: ("q", "<i8"),
    12: ("d", "<f8"),
}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")

# Element types whose data is exposed with their own dtype instead of raw bytes.
_PLAIN_DTYPES = {
    GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16,
    GGMLQuantizationType.F64: np.float64, GGMLQuantizationType.I8: np.int8,
    GGMLQuantizationType.I16: np.int16, GGMLQuantizationType.I32: np.int32,
    GGMLQuantizationType.I64: np.int64,
}


class GGUFError(DgChatError):
    """The file is not a readable GGUF model."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    type: GGMLQuantizationType
    shape: tuple[int, ...]
    """numpy order (slowest dimension first): ggml's `ne` reversed."""
    offset: int
    """Absolute byte offset of the data in the file."""
    n_bytes: int
    part: int = 0
    """Which file of a split GGUF holds the data (0: the first, or the only one)."""

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def byte_shape(self) -> tuple[int, ...]:
        """The shape of the data as rows of bytes: ([...,] bytes per row)."""
        if not self.shape:
            return (self.n_bytes,)
        block, type_size = GGML_QUANT_SIZES[self.type]
        return (*self.shape[:-1], self.shape[-1] // block * type_size)


class _Cursor:
    """Bounds-checked little-endian reads over the mapped header."""

    def __init__(self, buf: mmap.mmap, path: Path):
        self.buf, self.pos, self.size, self.path = buf, 0, len(buf), path

    def fail(self, what: str) -> GGUFError:
        return GGUFError(f"{self.path}: {what}")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.past_end(n, what, self.pos)

    def past_end(self, n: int, what: str, pos: int) -> GGUFError:
        """A read of `n` bytes at `pos` that the file cannot hold: truncated, or a corrupt length."""
        if n > self.size:
            return self.fail(f"corrupt file: {what} would need {n:,} bytes, more than the whole file ({self.size:,})")
        return self.fail(f"truncated file: {what} runs past the end at byte {pos}")

    def scalar(self, code: str, what: str) -> Any:
        n = struct.calcsize("<" + code)
        self.need(n, what)
        (value,) = struct.unpack_from("<" + code, self.buf, self.pos)
        self.pos += n
        return value

    def string(self, what: str) -> str:
        n = self.scalar("Q", what)
        self.need(n, what)
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def strings(self, count: int, what: str) -> list[str]:
        """A string array; the hot path of opening a big vocabulary, hence the plain loop."""
        self.need(count * 8, what)  # each string has at least its 8-byte length: no absurd counts
        buf, pos, size = self.buf, self.pos, self.size
        unpack = _U64.unpack_from
        raw: list[bytes] = []
        append = raw.append
        n = 8
        for _ in range(count):
            if pos + 8 > size:
                break
            (n,) = unpack(buf, pos)
            pos += 8
            if pos + n > size:
                break
            append(buf[pos:pos + n])
            pos += n
        self.pos = pos
        if len(raw) < count:
            raise self.past_end(n, what, pos)
        return [b.decode("utf-8", errors="replace") for b in raw]

    def value(self, vtype: int, what: str) -> Any:
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            return self.array(what)
        if vtype not in _SCALARS:
            raise self.fail(f"{what}: unknown value type {vtype}")
        return self.scalar(_SCALARS[vtype][0], what)

    def array(self, what: str, depth: int = 0) -> Any:
        if depth > MAX_ARRAY_NESTING:  # a crafted file could otherwise exhaust the stack
            raise self.fail(f"{what}: arrays nested more than {MAX_ARRAY_NESTING} deep")
        etype = self.scalar("I", what)
        count = self.scalar("Q", what)
        if etype == _STRING:
            return self.strings(count, what)
        if etype == _ARRAY:
            if count > MAX_NESTED_ARRAYS:
                raise self.fail(f"{what}: an array of {count:,} arrays (dg-chat reads at most {MAX_NESTED_ARRAYS:,})")
            self.need(count * 12, what)  # each has at least its 4-byte type and 8-byte count
            return [self.array(what, depth + 1) for _ in range(count)]
        if etype not in _SCALARS:
            raise self.fail(f"{what}: unknown array element type {etype}")
        dtype = np.dtype(_SCALARS[etype][1])
        self.need(count * dtype.itemsize, what)
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos).copy()
        self.pos += count * dtype.itemsize
        return out


class GGUFFile:
    """An open GGUF file. Use as a context manager or call `close()`.

    A model split by llama.cpp's gguf-split (`split.count` > 1) opens from its first part, with
    the other parts beside it under their split names; its tensors then come from all parts.
    Whether a file is split is decided from its `split.*` metadata, never from its name."""

    def __init__(self, path: str | os.PathLike, *, part_of_split: bool = False):
        self.path = Path(path)
        self._map = _map_file(self.path)
        self._parts: list[GGUFFile] = []
        try:
            self._parse()
            if not part_of_split:
                self._open_other_parts()
        except Exception:
            self.close()
            raise

    def _parse(self) -> None:
        cur = _Cursor(self._map, self.path)
        self.file_size = cur.size
        if cur.size < 4 or self._map[:4] != MAGIC:
            raise cur.fail(f"not a GGUF file (starts with {bytes(self._map[:4])!r}, expected b'GGUF')")
        cur.pos = 4
        self.version = cur.scalar("I", "header")
        if self.version not in (2, 3):
            swapped = int.from_bytes(self.version.to_bytes(4, "little"), "big")
            hint = " (big-endian files are not supported)" if swapped in (2, 3) else ""
            raise cur.fail(f"unsupported GGUF version {self.version}{hint}")
        n_tensors = cur.scalar("Q", "header")
        n_kv = cur.scalar("Q", "header")
        # Smallest possible entries: a KV is 8+0+4+1 bytes, a tensor info 8+0+4+8+4+8.
        if n_kv * 13 > cur.size or n_tensors * 32 > cur.size:
            raise cur.fail(f"corrupt or truncated header: {n_kv} metadata entries and {n_tensors} tensors "
                           f"cannot fit in {cur.size} bytes")

        self.metadata: dict[str, Any] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            if key in self.metadata:
                raise cur.fail(f"duplicate metadata key '{key}'")
            vtype = cur.scalar("I", f"metadata '{key}'")
            self.metadata[key] = cur.value(vtype, f"metadata '{key}'")

        self.alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(self.alignment, int) or self.alignment <= 0 or self.alignment & (self.alignment - 1):
            raise cur.fail(f"invalid general.alignment {self.alignment!r} (must be a power of two)")

        infos = []
        for i in range(n_tensors):
            name = cur.string(f"tensor #{i} name")
            n_dims = cur.scalar("I", f"tensor '{name}'")
            if n_dims > MAX_DIMS:
                raise cur.fail(f"tensor '{name}' has {n_dims} dimensions (at most {MAX_DIMS})")
            ne = [cur.scalar("Q", f"tensor '{name}'") for _ in range(n_dims)]
            raw_type = cur.scalar("I", f"tensor '{name}'")
            rel_offset = cur.scalar("Q", f"tensor '{name}'")
            infos.append((name, ne, raw_type, rel_offset))
        self.data_offset = -(-cur.pos // self.alignment) * self.alignment

        self.tensors: dict[str, TensorInfo] = {}
        for name, ne, raw_type, rel_offset in infos:
            self.tensors[name] = self._tensor_info(cur, name, ne, raw_type, rel_offset)
        spans = sorted((t.offset, t.offset + t.n_bytes, t.name) for t in self.tensors.values())
        for (_, end, a), (start, _, b) in pairwise(spans):
            if start < end:
                raise cur.fail(f"tensors '{a}' and '{b}' overlap")

    def _tensor_info(self, cur: _Cursor, name: str, ne: list[int], raw_type: int, rel_offset: int) -> TensorInfo:
        if name in self.tensors:
            raise cur.fail(f"duplicate tensor '{name}'")
        try:
            qtype = GGMLQuantizationType(raw_type)
        except ValueError:
            raise cur.fail(f"tensor '{name}' has unknown type {raw_type}") from None
        block, type_size = GGML_QUANT_SIZES[qtype]
        row = ne[0] if ne else 1
        if row % block:
            raise cur.fail(f"tensor '{name}': row of {row} is not a multiple of the {qtype.name} block size {block}")
        n_elements = int(np.prod(ne, dtype=object)) if ne else 1
        n_bytes = n_elements // block * type_size
        if rel_offset % self.alignment:
            raise cur.fail(f"tensor '{name}': offset {rel_offset} is not aligned to {self.alignment} bytes")
        offset = self.data_offset + rel_offset
        if offset + n_bytes > cur.size:
            raise cur.fail(
                f"truncated file: tensor '{name}' needs bytes {offset}..{offset + n_bytes} "
                f"but the file has {cur.size} (incomplete download?)")
        return TensorInfo(name, qtype, tuple(reversed(ne)), offset, n_bytes)

    # -- split models ------------------------------------------------------------------

    @property
    def paths(self) -> list[Path]:
        """This file, then the other parts of a split model in order."""
        return [self.path, *(part.path for part in self._parts)]

    def split_position(self) -> tuple[int, int]:
        """(part number from 1, number of parts) from `split.no` and `split.count`; (1, 1) if not split."""
        count, no = self.metadata.get("split.count", 1), self.metadata.get("split.no", 0)
        if not _is_index(count) or count < 1:
            raise GGUFError(f"{self.path}: metadata 'split.count' is {count!r}, expected an integer >= 1")
        if not _is_index(no) or not 0 <= no < count:
            raise GGUFError(f"{self.path}: metadata 'split.no' is {no!r}, expected an integer in 0..{count - 1}")
        return no + 1, count

    def _split_error(self, reason: str) -> GGUFError:
        number, count = self.split_position()
        return GGUFError(f"{self.path}: part {number} of {count} of a split GGUF: {reason}")

    def _open_other_parts(self) -> None:
        number, count = self.split_position()
        if count == 1:
            return
        named = SPLIT_NAME.match(self.path.name)
        if number != 1:
            first = f" ({named['prefix']}-00001-of-{count:05d}.gguf)" if named else ""
            raise self._split_error(f"load the model from its first part{first}, with the others beside it")
        if not named or int(named["no"]) != 1 or int(named["count"]) != count:
            raise self._split_error(
                f"its name is not the split name llama.cpp looks for (NAME-00001-of-{count:05d}.gguf); "
                "rename it and its other parts back, or merge them with `llama-gguf-split --merge`")
        for index in range(1, count):
            sibling = self.path.with_name(f"{named['prefix']}-{index + 1:05d}-of-{count:05d}.gguf")
            if not sibling.is_file():
                raise self._split_error(f"part {index + 1} is missing (looked for {sibling.name} beside it)")
            self._add_part(GGUFFile(sibling, part_of_split=True), index, count)
        expected = self.metadata.get("split.tensors.count")
        if expected is not None and (not _is_index(expected) or expected != len(self.tensors)):
            raise self._split_error(f"its {count} parts hold {len(self.tensors)} tensors, "
                                    f"but 'split.tensors.count' is {expected!r}")

    def _add_part(self, part: GGUFFile, index: int, count: int) -> None:
        self._parts.append(part)
        if part.split_position() != (index + 1, count):
            raise GGUFError(f"{part.path}: metadata says part {part.split_position()[0]} of "
                            f"{part.split_position()[1]}, expected part {index + 1} of {count} of {self.path.name}")
        for name, info in part.tensors.items():
            if name in self.tensors:
                raise GGUFError(f"{part.path}: duplicate tensor '{name}' (also in another part)")
            self.tensors[name] = replace(info, part=len(self._parts))
        self.file_size += part.file_size

    # -- metadata ---------------------------------------------------------------------

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str) or not arch:
            raise GGUFError(f"{self.path}: no general.architecture in the metadata")
        return arch

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def arch_get(self, suffix: str, default: Any = None) -> Any:
        """`{architecture}.{suffix}`, e.g. arch_get("block_count")."""
        return self.metadata.get(f"{self.architecture}.{suffix}", default)

    # -- tensor data ------------------------------------------------------------------

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a uint8 view into the mapping (no copy)."""
        info = self.info(name)
        mapping = self._parts[info.part - 1]._map if info.part else self._map
        return np.frombuffer(mapping, dtype=np.uint8, count=info.n_bytes, offset=info.offset)

    def array(self, name: str) -> np.ndarray:
        """A view of the tensor: typed and shaped for plain types, or uint8 rows of blocks
        ([..., bytes per row]) for quantized ones and BF16 (numpy has no bfloat16)."""
        info = self.info(name)
        data = self.raw(name)
        if info.type in _PLAIN_DTYPES:
            return data.view(_PLAIN_DTYPES[info.type]).reshape(info.shape)
        return data.reshape(info.byte_shape)

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise GGUFError(f"{self.path}: tensor '{name}' is missing") from None

    def close(self) -> None:
        for part in self._parts:
            part.close()
        try:
            self._map.close()
        except BufferError:
            pass  # tensor views still use the mapping; it is unmapped when the last one goes

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _map_file(path: Path) -> mmap.mmap:
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise GGUFError(f"{path}: the file is empty, not a GGUF model")
            # A private (copy-on-write) mapping is writable, so torch.frombuffer can wrap it
            # without a copy and without warnings; nothing is ever written back.
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except FileNotFoundError:
        raise GGUFError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise GGUFError(f"{path}: is a directory, not a GGUF file") from None
    except PermissionError:
        raise GGUFError(f"{path}: permission denied") from None
    except OSError as exc:
        raise GGUFError(f"{path}: cannot read ({exc.strerror or exc})") from None


def open_gguf(path: str | os.PathLike) -> GGUFFile:
    return GGUFFile(path)
