"""GGUF tensors as torch tensors in the compute dtype, without ever holding the whole model
dequantised.

- On the CPU, tensors stored in the compute dtype are zero-copy views of the file mapping; the
  others are dequantised each time they are used (memory stays at the file size).
- On CUDA the dense tensors (everything but the experts: ~2.3B of the 26B parameters, ~5 GB in
  bf16) are dequantised once at load; quantised experts stay quantised in VRAM.
- Experts are dequantised one selected expert at a time.
"""

from __future__ import annotations

import torch

from dg_chat.gguf.reader import GGUFFile, TensorInfo

_NATIVE = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _raw_bytes(f: GGUFFile, info: TensorInfo) -> torch.Tensor:
    """The tensor's bytes as a uint8 torch tensor viewing the file mapping: [*shape[:-1], row bytes]."""
    return torch.from_numpy(f.raw(info.name)).view(*info.shape[:-1], -1)


class Weights:
    def __init__(self, f: GGUFFile, device: torch.device, dtype: torch.dtype):
        self.file, self.device, self.dtype = f, device, dtype
        self._resident: dict[str, torch.Tensor] = {}
        self._raw: dict[str, torch.Tensor] = {}
        for name, info in f.tensors.items():
            stored = _NATIVE.get(info.type.name)
            raw = _raw_bytes(f, info)
            if device.type == "cpu":
                if stored == dtype:
                    self._resident[name] = raw.view(dtype)
                else:
                    self._raw[name] = raw
            elif "_exps." in name and stored is None:
                self._raw[name] = raw.to(device)
            else:
                self._resident[name] = self._dequantize(info, raw.to(device))

    def _dequantize(self, info: TensorInfo, raw: torch.Tensor, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        shape = shape or info.shape
        if info.type.name in _NATIVE:
            return raw.view(_NATIVE[info.type.name]).to(self.dtype)
        from dg_chat.gguf.dequant import dequantize  # noqa: PLC0415 - only quantised files need it

        return dequantize(raw, info.type, shape, dtype=self.dtype)

    def get(self, name: str) -> torch.Tensor:
        """A whole tensor in the compute dtype."""
        if name in self._resident:
            return self._resident[name]
        return self._dequantize(self.file.info(name), self._raw[name])

    def expert(self, name: str, index: int) -> torch.Tensor:
        """One expert's matrix [rows, cols] of a 3-D expert tensor, in the compute dtype."""
        if name in self._resident:
            return self._resident[name][index]
        info = self.file.info(name)
        return self._dequantize(info, self._raw[name][index], info.shape[1:])

    def release(self) -> None:
        self._resident.clear()
        self._raw.clear()
