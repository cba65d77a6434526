"""Where the Triton kernels can run, and the one place they are launched from (so that the
benchmarks can count launches per decode step)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

try:
    import triton
    import triton.language as tl  # noqa: F401 - re-exported for the kernel modules
except ImportError:  # CPU builds of torch do not depend on triton
    triton = None


def interpreting() -> bool:
    """Triton's CPU interpreter is on: kernels run on CPU tensors (slowly; for tests)."""
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def unavailable_reason(device: torch.device) -> str | None:
    """Why the Triton kernels cannot run on `device` (None: they can)."""
    if triton is None:
        return "the triton package is not installed (pip install triton)"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and interpreting():
        return None
    if device.type == "cpu":
        return "Triton kernels run on the CPU only under TRITON_INTERPRET=1 (a slow interpreter, for tests)"
    return f"no Triton kernels for device {device}"


@dataclass
class LaunchCounter:
    """Launches counted by `counting`, by kernel name."""

    by_kernel: Counter[str] = field(default_factory=Counter)

    @property
    def launches(self) -> int:
        return sum(self.by_kernel.values())


_counters: list[LaunchCounter] = []


@contextmanager
def counting() -> Iterator[LaunchCounter]:
    """Count the Triton launches made inside the block (the counter stays readable after it)."""
    counter = LaunchCounter()
    _counters.append(counter)
    try:
        yield counter
    finally:
        _counters.remove(counter)


in_launch = False
"""True while `launch` runs a kernel: under the interpreter a launch copies tensors with aten ops
of its own, which dispatch-mode checks of a decode step must tell apart from the step's ops."""


def launch(kernel: Any, grid: tuple[int, ...], *args: Any, **meta: Any) -> None:
    """kernel[grid](*args, **meta), counted."""
    global in_launch
    for counter in _counters:
        counter.by_kernel[kernel.__name__] += 1
    in_launch = True
    try:
        kernel[grid](*args, **meta)
    finally:
        in_launch = False
