"""A guard against oneMKL's VML first-call race (pytorch/pytorch#188792).

On the CPU, torch computes float32/float64 `cos`, `sin`, `exp`, `tanh`, ... of contiguous tensors
with MKL's VML functions (`ATen/cpu/vml.h`), each intra-op thread on its own chunk. oneMKL 2024.2,
which torch 2.13's CPU wheels bundle, picks each VML function's kernel lazily on its first call;
when that first call runs on two threads at once, one of them can run a low-accuracy kernel for
its whole chunk. In dg-chat that made the RoPE table of a process's first prompt wrong in one
chunk (errors ~1e-4 instead of ~1e-8) in about one run in eight, and so the answer: the same seed
then gave other tokens than transformers. Later calls are exact, so a first call on one element,
in one thread, for every such function and dtype, settles the choice before any parallel use.
"""

from __future__ import annotations

import functools

import torch

VML_FUNCTIONS = ("acos", "asin", "atan", "cos", "erf", "erfc", "erfinv", "exp", "log", "log10", "log2", "sin",
                 "sqrt", "tan", "tanh", "trunc")
"""The functions that torch 2.13's `ATen/cpu/vml.h` computes with MKL (`IMPLEMENT_VML_MKL`)."""


@functools.cache
def resolve_vml_dispatch() -> None:
    """Call every VML function once on a one-element float32 and float64 tensor (a single-threaded
    first call), once per process. Costs microseconds; call it before the first multi-threaded
    float op of a process whose results must be reproducible."""
    for dtype in (torch.float32, torch.float64):
        x = torch.full((1,), 0.5, dtype=dtype)
        for name in VML_FUNCTIONS:
            getattr(torch, name)(x)
