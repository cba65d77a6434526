"""A dispatch mode that fails on any op that makes the host wait for the device (gpu-engine.md
§6.7): what a decode step of the fast path must never do, or it could not be a CUDA graph."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dg_chat.engine.backends.torch_dg.kernels import runtime

aten = torch.ops.aten
SYNCING = {aten._local_scalar_dense.default, aten.item.default, aten.nonzero.default, aten.equal.default,
           aten.is_nonzero.default, aten.masked_select.default, aten.unique_dim.default, aten._unique2.default}


class NoHostSync(TorchDispatchMode):
    """Raises AssertionError on a host-synchronising op: .item()/.tolist() (_local_scalar_dense),
    nonzero, equal, boolean-mask indexing, copies to the CPU from another device."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # Triton's interpreter copies every kernel argument to and from numpy with aten ops of its
        # own: that is the launch's plumbing, not the step's ops, and it does not exist on a GPU
        if not runtime.in_launch and (func in SYNCING or _to_host(func, args, kwargs) or _bool_index(func, args)):
            raise AssertionError(f"host synchronisation: {func}")
        return func(*args, **kwargs)


def _to_host(func, args, kwargs) -> bool:
    # an explicit copy to the CPU: on CPU tensors the honest proxy of what syncs on a GPU
    if func is aten._to_copy.default:
        return kwargs.get("device") is not None and torch.device(kwargs["device"]).type == "cpu"
    if func is aten.copy_.default:
        return args[0].device.type == "cpu" and args[1].device.type != "cpu"
    return False


def _bool_index(func, args) -> bool:
    return func in (aten.index.Tensor, aten.index_put_.default) and any(
        i is not None and i.dtype == torch.bool for i in args[1])
