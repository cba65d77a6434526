"""The PyTorch backend: DiffusionGemma GGUFs on CUDA (bf16) or the CPU (float32)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from dg_chat.config import BackendName, KernelsChoice, KernelsName, Settings
from dg_chat.engine.backends.base import BackendError, OpenedBackend, SelfCondition
from dg_chat.engine.backends.torch_dg.cache import GrowingKVCache, KVCache, StaticKVCache
from dg_chat.engine.backends.torch_dg.hparams import HParams
from dg_chat.engine.backends.torch_dg.kernel_choice import choose_kernels
from dg_chat.engine.backends.torch_dg.memory import GB, context_label, cuda_memory, default_context
from dg_chat.engine.backends.torch_dg.mkl_vml import resolve_vml_dispatch
from dg_chat.engine.backends.torch_dg.model import DiffusionGemma
from dg_chat.engine.backends.torch_dg.ops import Ops, ReferenceOps
from dg_chat.engine.backends.torch_dg.weights import Weights
from dg_chat.engine.turn_engine import Noise
from dg_chat.errors import DgChatError
from dg_chat.gguf.checks import check_divisors
from dg_chat.gguf.reader import GGUFError, GGUFFile
from dg_chat.text.tokenizer import Tokenizer


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
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise BackendError(f"device '{requested}' requested but only {torch.cuda.device_count()} CUDA GPU(s) "
                           "are visible (use cuda:0)")
    return device


def check_gpu_memory(f: GGUFFile, hp: HParams, device: torch.device, kernels: KernelsName) -> None:
    """A one-line error before loading, instead of running out of memory halfway: the estimate of
    `memory.cuda_memory` for `kernels` ("triton" or "reference") at the default context."""
    estimate = cuda_memory(f, hp, kernels, default_context(hp))
    free, _total = torch.cuda.mem_get_info(device)
    if estimate.total > free:
        way_out = "--kernels triton, " if kernels == "reference" else ""
        raise BackendError(f"{f.path.name} needs about {estimate.describe()} for a {context_label(estimate.context)} "
                           f"context, but {free / GB:.1f} GB of GPU memory are free: use {way_out}a smaller quant "
                           "(dg-chat models pull diffusiongemma:Q4_K_M) or --device cpu")


class TorchBackend:
    name: BackendName = "torch"
    noise: Noise = "uniform"
    mask_token_id: int | None = None

    def __init__(self, f: GGUFFile, device: str = "auto", kernels: KernelsChoice = "auto", *,
                 int8_activations: bool | None = None):
        """int8_activations: the triton kernels' W4A8 dense GEMMs (`TritonOps`). None: on CUDA, where
        they take less than half the instructions of 16-bit activations (as llama.cpp's CUDA
        kernels, which quantise activations to q8_1 too), off on the CPU, whose float32 stays
        within 1e-4 of the reference."""
        self.file = f
        self.path: Path = f.path
        self.architecture = f.architecture
        self.hp = HParams.from_gguf(f)
        self.hp.check_tensors(f)
        dev = resolve_device(device)
        self.kernels = choose_kernels(kernels, dev)
        self.fused_sampling = self.kernels == "triton"
        """Sample with the fused on-device sampler (fused_sampler.py) instead of the reference one."""
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        if dev.type == "cuda":
            check_gpu_memory(f, self.hp, dev, self.kernels)
        else:
            resolve_vml_dispatch()
        try:
            weights = Weights(f, dev, dtype, raw_matrices=self.kernels == "triton")
            int8 = dev.type == "cuda" if int8_activations is None else int8_activations
            self.model = DiffusionGemma(self.hp, weights, self._ops(weights, int8))
        except torch.OutOfMemoryError:
            raise BackendError(f"not enough memory on {dev} to load {f.path.name}: try a smaller quant "
                               "or --device cpu") from None
        self.device = str(dev)
        self.canvas_length = self.hp.canvas_length
        self.vocab_size = self.hp.vocab_size
        self.context_length = self.hp.context_length
        self.cache = self._new_cache()
        self.tokens: list[int] = []
        self._graphs = None
        if self.kernels == "triton" and dev.type == "cuda" and isinstance(self.cache, StaticKVCache):
            from dg_chat.engine.backends.torch_dg.graphs import DecodeGraphs  # noqa: PLC0415 - CUDA only

            self._graphs = DecodeGraphs(self.model, self.cache)

    def _ops(self, weights: Weights, int8_activations: bool = False) -> Ops:
        if self.kernels == "reference":
            return ReferenceOps(self.hp, weights)
        from dg_chat.engine.backends.torch_dg.kernels.triton_ops import TritonOps  # noqa: PLC0415 - needs triton

        return TritonOps(self.hp, weights, int8_activations=int8_activations)

    def _new_cache(self) -> KVCache:
        if self.kernels == "reference":
            return GrowingKVCache(self.hp)
        return StaticKVCache(self.hp, self.model.device, self.model.dtype)

    @property
    def cached_tokens(self) -> int:
        return len(self.tokens)

    def _tensor(self, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(ids, dtype=torch.long).to(self.model.device)

    def prefill(self, token_ids: Sequence[int]) -> int:
        common = 0
        for cached, token in zip(self.tokens, token_ids, strict=False):  # the common prefix
            if cached != token:
                break
            common += 1
        if common < len(self.tokens) and not self.cache.truncate(common):
            self.cache.truncate(0)  # start over, in the same buffers (captured graphs read them)
            common = 0
        self.tokens = list(token_ids[:common])
        new = list(token_ids[common:])
        if new:
            self.model.encode(self._tensor(new), self.cache)
            self.tokens += new
        return len(new)

    def denoise(self, canvas: torch.Tensor, self_cond: SelfCondition | None) -> torch.Tensor:
        canvas = self._tensor(canvas)
        if self._graphs is not None:
            return self._graphs.decode(canvas, self_cond)
        return self.model.decode(canvas, self.cache, self_cond)

    def commit(self, canvas: torch.Tensor) -> None:
        ids = canvas.tolist()
        self.model.encode(self._tensor(ids), self.cache)
        self.tokens += ids

    def close(self) -> None:
        self.model.w.release()
        self._graphs = None
        self.cache = GrowingKVCache(self.hp)
        self.tokens = []
        self.file.close()


def open_backend(f: GGUFFile, settings: Settings) -> OpenedBackend:
    """The loader's entry (engine/loader.py): the backend on `settings.device` with `settings.kernels`,
    and the tokenizer of the GGUF's metadata. Owns `f` from the call on: the backend keeps it mapped
    and closes it on close(); a failure closes it."""
    try:
        if "rope_freqs.weight" in f.tensors:  # the model divides by them
            check_divisors(f, "rope_freqs.weight")
        backend = TorchBackend(f, settings.device, settings.kernels)  # checks the hyper-parameters first
    except BaseException:
        f.close()
        raise
    try:
        return OpenedBackend(backend, Tokenizer.from_metadata(f.metadata))
    except DgChatError as exc:  # its messages name the key, not the file
        backend.close()
        raise GGUFError(f"{f.path}: {exc}") from None
    except BaseException:
        backend.close()
        raise
