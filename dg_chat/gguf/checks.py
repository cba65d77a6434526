"""Typed, range-checked reads of GGUF metadata, shared by both backends' loaders.

Every impossible or wrongly typed value becomes one GGUFError line naming the file, the key, what
was found and what is expected, e.g.
    model.gguf: metadata 'diffusion.canvas_length' is 0, expected an integer >= 1
Arrays come back from the reader as numpy arrays, strings as str, numbers as Python scalars.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, TypeGuard

import numpy as np
from gguf.constants import GGMLQuantizationType

from dg_chat.errors import DgChatWarning
from dg_chat.gguf.reader import GGUFError, GGUFFile

TOKEN_ID_KEYS = ("bos", "eos", "eot", "eom", "padding", "mask", "unknown", "seperator", "cls")
"""`tokenizer.ggml.{name}_token_id` keys that tokenizers (ours and llama.cpp's) read."""


def _found(value: Any) -> str:
    """How a wrongly typed or impossible value is named in a message."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, (list, np.ndarray)):
        return f"an array of {len(value)}"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    return repr(value)


def _fail(f: GGUFFile, key: str, value: Any, expected: str) -> GGUFError:
    found = "missing" if value is None else f"is {_found(value)}"
    return GGUFError(f"{f.path}: metadata '{key}' {found}, expected {expected}")


def _is_int(value: Any) -> TypeGuard[int | np.integer]:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> TypeGuard[int | float | np.integer | np.floating]:
    return _is_int(value) or isinstance(value, (float, np.floating))


def meta_int(f: GGUFFile, key: str, *, minimum: int = 1, maximum: int | None = None,
             default: int | None = None) -> int:
    """An integer in [minimum, maximum]; `default` when absent (required if None)."""
    value = f.metadata.get(key)
    if value is None and default is not None:
        return default
    expected = f"an integer >= {minimum}" if maximum is None else f"an integer in {minimum}..{maximum}"
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        raise _fail(f, key, value, expected)
    return int(value)


def meta_float(f: GGUFFile, key: str, *, positive: bool = True, default: float | None = None) -> float:
    """A finite number, > 0 (or >= 0 when not `positive`); `default` when absent (required if None)."""
    value = f.metadata.get(key)
    if value is None and default is not None:
        return default
    expected = "a finite number " + ("> 0" if positive else ">= 0")
    if not _is_number(value) or not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise _fail(f, key, value, expected)
    return float(value)


def _array(value: Any, kinds: str) -> np.ndarray | None:
    """`value` as a 1-D numpy array if it is an array (or list) of numbers of one of `kinds`."""
    if isinstance(value, (list, tuple)):
        value = np.asarray(value) if all(_is_number(x) or isinstance(x, bool) for x in value) else None
    if isinstance(value, np.ndarray) and value.ndim == 1 and (value.dtype.kind in kinds or not len(value)):
        return value
    return None


def meta_ints(f: GGUFFile, key: str, length: int, *, minimum: int = 1) -> list[int]:
    """A per-layer integer: an array of `length` integers >= minimum, or one integer for all layers."""
    value = f.metadata.get(key)
    if _is_int(value):
        return [meta_int(f, key, minimum=minimum)] * length
    array = _array(value, "iu")
    if array is None or len(array) != length or (length and int(array.min()) < minimum):
        raise _fail(f, key, value, f"{length} integers >= {minimum} (one per layer) or one integer")
    return [int(x) for x in array]


def meta_flags(f: GGUFFile, key: str, length: int) -> list[bool]:
    """A per-layer flag array of `length` booleans (or 0/1 integers)."""
    value = f.metadata.get(key)
    array = _array(value, "iub")
    if array is None or len(array) != length or not np.isin(array.astype(np.int64), (0, 1)).all():
        raise _fail(f, key, value, f"{length} booleans (one per layer)")
    return [bool(x) for x in array]


def vocabulary_size(f: GGUFFile) -> int:
    tokens = f.metadata.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise _fail(f, "tokenizer.ggml.tokens", tokens, "the vocabulary, a non-empty array of strings")
    return len(tokens)


def check_token_ids(f: GGUFFile, n_vocab: int) -> None:
    """Every special token id that is present is an integer inside the vocabulary."""
    for name in TOKEN_ID_KEYS:
        key = f"tokenizer.ggml.{name}_token_id"
        value = f.metadata.get(key)
        if value is None:
            continue
        expected = f"a token id in 0..{n_vocab - 1} (the vocabulary has {n_vocab} tokens)"
        if _is_int(value) and not 0 <= value < n_vocab and name in ("eos", "eot"):
            warnings.warn(DgChatWarning(f"{f.path}: metadata '{key}' is {value}, expected {expected}: "
                                        "the model can never end its answer early"), stacklevel=2)
        elif not _is_int(value) or not 0 <= value < n_vocab:
            raise _fail(f, key, value, expected)


def check_divisors(f: GGUFFile, tensor: str) -> None:
    """A tensor of divisors (rope frequency factors): every value finite and > 0."""
    if f.info(tensor).type not in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        return  # stored quantized: checked where it is dequantised
    values = np.asarray(f.array(tensor), dtype=np.float64)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise GGUFError(f"{f.path}: tensor '{tensor}' has {float(values.flat[index])!r} at index {index}, "
                        "expected finite divisors > 0")
