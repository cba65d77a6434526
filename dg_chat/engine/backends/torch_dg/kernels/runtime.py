"""Where the Triton kernels can run, and the one place they are launched from (so that the
benchmarks can count launches per decode step)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

import torch

try:
    import triton
    import triton.language as tl  # noqa: F401 - re-exported for the kernel modules
except ImportError:  # CPU builds of torch do not depend on triton
    triton = None  # type: ignore[assignment]


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


class LaunchCounter:
    """Counts kernel launches while active (see `counting`)."""

    def __init__(self) -> None:
        self.launches = 0
        self.active = False


COUNTER = LaunchCounter()


@contextmanager
def counting() -> Iterator[LaunchCounter]:
    """Count the Triton launches made inside the block."""
    previous = COUNTER.launches, COUNTER.active
    COUNTER.launches, COUNTER.active = 0, True
    try:
        yield COUNTER
    finally:
        COUNTER.active = previous[1]
        if not previous[1]:
            COUNTER.launches = previous[0]


def launch(kernel: Any, grid: tuple[int, ...], *args: Any, **meta: Any) -> None:
    """kernel[grid](*args, **meta), counted. Under the interpreter the launch copies tensors
    with aten ops of its own; `in_launch` lets dispatch-mode checks tell those apart."""
    if COUNTER.active:
        COUNTER.launches += 1
    global in_launch
    in_launch = True
    try:
        kernel[grid](*args, **meta)
    finally:
        in_launch = False


in_launch = False
"""True while `launch` runs a kernel (the interpreter's own tensor copies are not the step's ops)."""
