"""The PyTorch backend: DiffusionGemma GGUFs on CUDA (bf16) or the CPU (float32)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from dg_chat.engine.backends.base import BackendError
from dg_chat.engine.backends.torch_dg.hparams import HParams
from dg_chat.engine.backends.torch_dg.model import DiffusionGemma, KVCache
from dg_chat.engine.backends.torch_dg.weights import Weights, device_bytes
from dg_chat.engine.sampling import SelfCondition
from dg_chat.gguf.reader import GGUFFile


def resolve_device(requested: str) -> torch.device:
    """auto -> cuda if available, else cpu; an explicit CUDA device must exist."""
    if requested in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise BackendError(f"unknown device '{requested}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device '{requested}' requested but no CUDA GPU is available (use --device cpu)")
    return device


GPU_HEADROOM = 2 * 2**30
"""Beyond the weights: the KV cache, a canvas's activations and [canvas, vocab] logits."""


def check_gpu_memory(f: GGUFFile, device: torch.device, dtype: torch.dtype) -> None:
    """A one-line error before loading, instead of running out of memory halfway."""
    need = device_bytes(f, device, dtype) + GPU_HEADROOM
    free, _total = torch.cuda.mem_get_info(device)
    if need > free:
        raise BackendError(f"{f.path.name} needs about {need / 2**30:.1f} GB of GPU memory but {free / 2**30:.1f} GB "
                           "are free: use a smaller quant (dg-chat models pull diffusiongemma:Q4_K_M) or --device cpu")


class TorchBackend:
    name = "torch"
    noise = "uniform"
    mask_token_id = None

    def __init__(self, f: GGUFFile, device: str = "auto"):
        self.file = f
        self.path: Path = f.path
        self.architecture = f.architecture
        self.hp = HParams.from_gguf(f)
        self.hp.check_tensors(f)
        dev = resolve_device(device)
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        if dev.type == "cuda":
            check_gpu_memory(f, dev, dtype)
        try:
            self.model = DiffusionGemma(self.hp, Weights(f, dev, dtype))
        except torch.OutOfMemoryError:
            raise BackendError(f"not enough memory on {dev} to load {f.path.name}: try a smaller quant "
                               "or --device cpu") from None
        self.device = str(dev)
        self.canvas_length = self.hp.canvas_length
        self.vocab_size = self.hp.vocab_size
        self.context_length = self.hp.context_length
        self.cache = KVCache()
        self.tokens: list[int] = []

    @property
    def cached_tokens(self) -> int:
        return len(self.tokens)

    def _tensor(self, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(ids, dtype=torch.long).to(self.model.device)

    def prefill(self, token_ids: Sequence[int]) -> int:
        common = 0
        for cached, new in zip(self.tokens, token_ids):
            if cached != new:
                break
            common += 1
        if common < len(self.tokens) and not self.model.truncate(self.cache, common):
            self.cache, common = KVCache(), 0
        self.tokens = list(token_ids[:common])
        new = list(token_ids[common:])
        if new:
            self.model.encode(self._tensor(new), self.cache)
            self.tokens += new
        return len(new)

    def denoise(self, canvas: torch.Tensor, self_cond: SelfCondition | None) -> torch.Tensor:
        probs = None
        if self_cond is not None:
            if self.model.dtype == torch.float32:
                probs = self_cond.probs  # bit-identical to softmax(logits) recomputed from float32
            else:  # transformers rounds the logits to the embedding dtype before the softmax
                probs = torch.softmax(self_cond.logits.to(self.model.dtype), dim=-1, dtype=torch.float32)
            probs = probs.to(self.model.dtype)
        return self.model.decode(self._tensor(canvas), self.cache, probs)

    def commit(self, canvas: torch.Tensor) -> None:
        ids = canvas.tolist()
        self.model.encode(self._tensor(ids), self.cache)
        self.tokens += ids

    def close(self) -> None:
        self.model.w.release()
        self.cache = KVCache()
        self.tokens = []
        self.file.close()
