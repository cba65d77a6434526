"""GGUF tensors as torch tensors in the compute dtype, without ever holding the whole model
dequantised.

- Tensors stored in the compute dtype on the CPU are zero-copy views of the file mapping.
- Dense tensors (everything but the experts: ~2.3B of the 26B parameters, ~5 GB in bf16) are
  dequantised once at load, on the CPU only while they fit `cpu_budget` bytes.
- The rest stays as stored (quantised in VRAM on CUDA) and is dequantised when used: experts one
  selected expert at a time, embedding rows only for the ids looked up.
- For the Triton kernels (`raw_matrices`), every matrix stays as stored and only vectors (norms,
  scales) are converted: the kernels read the blocks themselves.
"""

from __future__ import annotations

import torch

from dg_chat.gguf.dequant import check_supported, dequantize, tensor_bytes
from dg_chat.gguf.reader import GGUFFile, TensorInfo

_NATIVE = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
CPU_BUDGET = 4 * 2**30


def placement(info: TensorInfo, device: torch.device, dtype: torch.dtype, cpu_budget: int,
              raw_matrices: bool = False) -> str:
    """Where a tensor lives: "view" (zero-copy, CPU), "raw" (stored bytes, dequantised when
    used) or "resident" (dequantised once into the compute dtype on the device)."""
    if raw_matrices:
        return "raw" if len(info.shape) > 1 else "resident"
    expert = "_exps." in info.name
    if device.type == "cpu":
        if _NATIVE.get(info.type.name) == dtype:
            return "view"
        return "raw" if expert or info.n_elements * dtype.itemsize > cpu_budget else "resident"
    return "raw" if expert and info.type.name not in _NATIVE else "resident"


def device_bytes(f: GGUFFile, device: torch.device, dtype: torch.dtype) -> int:
    """What `Weights` allocates on an accelerator for this file (checked before loading)."""
    return sum(info.n_bytes if placement(info, device, dtype, 0) == "raw" else info.n_elements * dtype.itemsize
               for info in f.tensors.values())


class Weights:
    def __init__(self, f: GGUFFile, device: torch.device, dtype: torch.dtype, cpu_budget: int = CPU_BUDGET,
                 raw_matrices: bool = False):
        check_supported(f)
        self.file, self.device, self.dtype = f, device, dtype
        self._resident: dict[str, torch.Tensor] = {}
        self._raw: dict[str, torch.Tensor] = {}
        budget = cpu_budget
        for name, info in f.tensors.items():
            where = placement(info, device, dtype, budget, raw_matrices)
            if where == "raw":
                self._raw[name] = tensor_bytes(f, name, None if device.type == "cpu" else device)
            else:  # a view of the mapping for "view": same dtype, nothing to convert
                raw = tensor_bytes(f, name, None if where == "view" else device)
                self._resident[name] = self._dequantize(name, raw)
                if where == "resident" and device.type == "cpu":
                    budget -= info.n_elements * dtype.itemsize

    def _dequantize(self, name: str, raw: torch.Tensor, index: int | torch.Tensor | None = None) -> torch.Tensor:
        info = self.file.info(name)
        shape = info.shape if index is None else None
        rows = raw if index is None else raw[index]
        return dequantize(rows, info.type, shape, self.dtype, name=f"{self.file.path}: tensor '{name}'")

    def get(self, name: str) -> torch.Tensor:
        """A whole tensor in the compute dtype."""
        if name in self._resident:
            return self._resident[name]
        return self._dequantize(name, self._raw[name])

    def expert(self, name: str, index: int) -> torch.Tensor:
        """One expert's matrix [rows, cols] of a 3-D expert tensor, in the compute dtype."""
        if name in self._resident:
            return self._resident[name][index]
        return self._dequantize(name, self._raw[name], index)

    def raw(self, name: str) -> torch.Tensor:
        """The stored bytes of a matrix kept raw: uint8 [..., rows, bytes per row]."""
        return self._raw[name]

    def rows(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        """Rows `ids` of a 2-D tensor (an embedding lookup), dequantising only those rows."""
        if name in self._resident:
            return self._resident[name][ids]
        return self._dequantize(name, self._raw[name], ids.to(self._raw[name].device)).to(self.device)

    def release(self) -> None:
        self._resident.clear()
        self._raw.clear()
