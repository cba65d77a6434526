"""The `kernels` setting resolved for a device: the Triton kernels or the reference path."""

from __future__ import annotations

import torch

from dg_chat.config import KernelsChoice, KernelsName
from dg_chat.engine.backends.base import BackendError
from dg_chat.engine.backends.torch_dg.kernels import runtime


def choose_kernels(requested: KernelsChoice, device: torch.device) -> KernelsName:
    """auto -> "triton" where the Triton kernels can run on a CUDA `device`, else "reference";
    "triton" where they cannot run raises a one-line BackendError with the way out."""
    if requested == "reference":
        return "reference"
    reason = runtime.unavailable_reason(device)
    if requested == "auto":
        return "triton" if device.type == "cuda" and reason is None else "reference"
    if reason is not None:
        raise BackendError(f"--kernels triton on {_where(device)}: {reason}; use --kernels reference")
    return "triton"


def _where(device: torch.device) -> str:
    return "the CPU" if device.type == "cpu" else str(device)
