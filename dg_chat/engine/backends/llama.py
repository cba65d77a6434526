"""llama.cpp backend for Dream, LLaDA, LLaDA-MoE and RND1, on llama-cpp-python's low-level API.

libllama gives these architectures no KV cache and no sampling (both live in its diffusion
example only), so every denoising step decodes the whole sequence [context | canvas | rest of the
generation window] in one batch and reads the float32 logits of the canvas rows straight out of
libllama's output buffer (no copy). Dream and RND1 predict position p from row p - 1
(`diffusion.shift_logits`, absent = true); LLaDA does not. A turn may use the model's whole
training context: libllama's context (n_ctx = n_batch = n_ubatch; its buffers grow with it) is
sized for what is decoded and recreated larger for a longer chat (nothing is lost: no KV cache).

libllama aborts the whole process on many inputs it considers impossible (GGML_ASSERT): a decode
batch larger than n_ubatch, and dozens of metadata values of a GGUF (a block count of 0, more
experts used than exist, a rope dimension that is not the head size, ...). So a GGUF is loaded in
three stages, and llama.cpp only sees files that passed the earlier ones:
  1. `open_gguf` (structure, truncation) and the architecture and mask-token checks;
  2. a preflight in a child process: libllama loads the metadata without reading the weights
     (no_alloc), builds the compute graph of the context we are going to create, and runs its
     tokenizer over the whole vocabulary; an abort there kills the child, not us, and its
     assertion message becomes our one-line error;
  3. the real load, with full GPU offload when libllama was built with a GPU backend.
Decoding checks the batch size in Python before calling libllama.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import subprocess
import sys
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dg_chat.config import BackendName, Settings
from dg_chat.engine.backends.base import OpenedBackend, SelfCondition
from dg_chat.engine.backends.llama_lib import LLAMA_ARCHITECTURES, LlamaError, clean_log_line, library, library_and_log
from dg_chat.engine.backends.llama_tokenizer import LlamaTokenizer
from dg_chat.engine.turn_engine import Noise
from dg_chat.gguf.architectures import MOE_MASK_ARCHITECTURES, MaskArchitecture, is_mask_architecture
from dg_chat.gguf.checks import check_divisors, check_token_ids, meta_float, meta_int, meta_ints, vocabulary_size
from dg_chat.gguf.reader import GGUFError, GGUFFile, open_gguf

CANVAS_LENGTHS: dict[MaskArchitecture, int] = {"llada": 32, "llada-moe": 32, "dream": 256, "rnd1": 256}
"""Block length per family. LLaDA: 32, the semi-autoregressive block length of its reference
generate.py and chat demo (and a 32-token window per step keeps its 1-token-per-step default
cheap). Dream and RND1 denoise their whole answer as one sequence in their references (Dream's
demos: 256-512 tokens, RND1's: 256): one 256-token canvas is the nearest block loop."""
PROMPT_BUDGET = 2048
"""Tokens of room for the conversation to grow, beyond what is decoded now, when sizing libllama's context."""
PREFLIGHT_TIMEOUT_S = 300


# -- stage 1: what the GGUF says ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ModelInfo:
    architecture: MaskArchitecture
    n_ctx_train: int
    tokenizer_model: str
    """`tokenizer.ggml.model` ("gpt2", "llama", ...)."""


def read_model_info(path: Path) -> ModelInfo:
    """`model_info` of the GGUF at `path`."""
    with open_gguf(path) as gguf:
        return model_info(gguf)


def model_info(gguf: GGUFFile) -> ModelInfo:
    """What the GGUF metadata says, checked: LlamaError/GGUFError (one line) when the file cannot
    be a model this backend runs (unsupported architecture, no mask token, no vocabulary, or an
    impossible or wrongly typed value of a key that libllama or the sampler reads)."""
    path, arch = gguf.path, gguf.architecture
    if arch not in LLAMA_ARCHITECTURES or not is_mask_architecture(arch):
        raise LlamaError(f"{path}: '{arch}' is not an architecture the llama.cpp backend runs "
                         f"({', '.join(sorted(LLAMA_ARCHITECTURES))})")
    n_vocab = vocabulary_size(gguf)
    check_token_ids(gguf, n_vocab)
    if gguf.get("tokenizer.ggml.mask_token_id") is None:
        raise LlamaError(f"{path}: a {arch} model needs a mask token, but tokenizer.ggml.mask_token_id is missing")
    _check_hyperparameters(gguf, arch)
    return ModelInfo(
        architecture=arch,
        n_ctx_train=meta_int(gguf, f"{arch}.context_length"),
        tokenizer_model=gguf.get("tokenizer.ggml.model", ""),
    )


def _check_hyperparameters(gguf: GGUFFile, arch: str) -> None:
    """The hyper-parameters libllama reads for these architectures (it would abort on many)."""
    n_layers = meta_int(gguf, f"{arch}.block_count")
    heads = meta_ints(gguf, f"{arch}.attention.head_count", n_layers)
    if f"{arch}.attention.head_count_kv" in gguf.metadata:
        kv_heads = meta_ints(gguf, f"{arch}.attention.head_count_kv", n_layers)
        if any(h % kv for h, kv in zip(heads, kv_heads, strict=True)):
            raise GGUFError(f"{gguf.path}: metadata '{arch}.attention.head_count_kv' is {kv_heads}, "
                            f"expected divisors of the attention heads {heads}")
    meta_int(gguf, f"{arch}.embedding_length")
    meta_float(gguf, f"{arch}.attention.layer_norm_rms_epsilon")
    if f"{arch}.feed_forward_length" in gguf.metadata:
        meta_ints(gguf, f"{arch}.feed_forward_length", n_layers)
    if f"{arch}.rope.freq_base" in gguf.metadata:
        meta_float(gguf, f"{arch}.rope.freq_base")
    if arch in MOE_MASK_ARCHITECTURES or f"{arch}.expert_count" in gguf.metadata:
        experts = meta_int(gguf, f"{arch}.expert_count")
        meta_int(gguf, f"{arch}.expert_used_count", maximum=experts)
    if "rope_freqs.weight" in gguf.tensors:
        check_divisors(gguf, "rope_freqs.weight")


# -- stage 2: the preflight child ----------------------------------------------------------

_PREFLIGHT = r"""
import ctypes, os, sys
import llama_cpp.llama_cpp as L

@L.llama_log_callback
def on_log(level, text, _):
    if level == 4:  # GGML_LOG_LEVEL_ERROR
        sys.stderr.write(text.decode("utf-8", "replace"))

L.llama_log_set(on_log, None)
L.llama_backend_init()
path, n_ctx = sys.argv[1], int(sys.argv[2])
mp = L.llama_model_default_params()
mp.n_gpu_layers, mp.no_alloc, mp.load_mode = 0, True, L.LLAMA_LOAD_MODE_NONE
model = L.llama_model_load_from_file(os.fsencode(path), mp)
if not model:
    sys.exit(3)
cp = L.llama_context_default_params()
cp.n_ctx = cp.n_batch = cp.n_ubatch = n_ctx
if not L.llama_init_from_model(model, cp):
    sys.exit(4)
vocab = L.llama_model_get_vocab(model)
n = L.llama_vocab_n_tokens(vocab)
ids = (L.llama_token * n)(*range(n))
need = -L.llama_detokenize(vocab, ids, n, None, 0, False, True)
buf = ctypes.create_string_buffer(max(need, 1))
L.llama_detokenize(vocab, ids, n, buf, len(buf), False, True)
text = "Hello\n<|im_start|> world 123 \u00e9\u4e16".encode()
out = (L.llama_token * 256)()
for special in (False, True):
    L.llama_tokenize(vocab, text, len(text), out, 256, False, special)
"""


@functools.cache
def _preflight_cached(path: str, size: int, mtime_ns: int, n_ctx: int) -> None:
    env = dict(os.environ, GGML_NO_BACKTRACE="1", CUDA_VISIBLE_DEVICES="")
    try:
        done = subprocess.run([sys.executable, "-c", _PREFLIGHT, path, str(n_ctx)], capture_output=True,
                              text=True, errors="replace", env=env, timeout=PREFLIGHT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise LlamaError(f"{path}: llama.cpp took more than {PREFLIGHT_TIMEOUT_S} s to check the model") from None
    if done.returncode == 0:
        return
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    asserts = [line for line in lines if "GGML_ASSERT" in line or "GGML_ABORT" in line or "fatal error" in line]
    reason = clean_log_line((asserts or lines or [f"exit code {done.returncode}"])[0])
    raise LlamaError(f"{path}: llama.cpp cannot load this model: {reason}")


def preflight(path: Path, n_ctx: int) -> None:
    """Let a child process load `path` the way we will; LlamaError with libllama's reason if it
    fails or aborts. Cached per file version and context size."""
    stat = path.stat()
    _preflight_cached(str(path), stat.st_size, stat.st_mtime_ns, n_ctx)


# -- stage 3: the backend ---------------------------------------------------------------------

def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _free_context(lib: Any, handles: dict[str, Any]) -> None:
    if handles.get("batch") is not None:
        lib.llama_batch_free(handles.pop("batch"))
    if handles.get("ctx"):
        lib.llama_free(handles.pop("ctx"))


def _free(lib: Any, handles: dict[str, Any]) -> None:
    _free_context(lib, handles)
    if handles.get("model"):
        lib.llama_model_free(handles.pop("model"))


class LlamaBackend:
    """A Dream/LLaDA/LLaDA-MoE/RND1 GGUF in libllama (see the module docstring)."""

    name: BackendName = "llama"
    noise: Noise = "mask"
    fused_sampling = False
    device = "cpu"
    """Where logits and sampling live: libllama hands back logits in host memory."""

    def __init__(self, path: str | os.PathLike, *, max_canvases: int = 4, canvas_length: int | None = None,
                 gpu: bool | None = None, main_gpu: int | None = None, n_threads: int | None = None,
                 info: ModelInfo | None = None):
        """context_length is the model's training context; libllama's context starts with room
        for max_canvases canvases and PROMPT_BUDGET tokens of conversation (see `_reserve`).
        `info`: the file's checked `model_info` where the caller has it (else it is read from `path`)."""
        self.path = Path(path)
        self.info = read_model_info(self.path) if info is None else info
        self.architecture: str = self.info.architecture
        self.canvas_length = canvas_length or CANVAS_LENGTHS[self.info.architecture]
        self.max_canvases = max_canvases
        self.context_length = self.info.n_ctx_train
        if self.context_length < self.canvas_length + 1:
            raise LlamaError(f"{self.path}: the model's context of {self.context_length} tokens "
                             f"({self.architecture}.context_length) cannot hold a {self.canvas_length}-token canvas")
        self.window = 0
        """The tokens libllama's current context holds (its n_ctx, n_batch and n_ubatch)."""
        self.n_threads = n_threads or _usable_cores()
        preflight(self.path, self._window_for(max_canvases * self.canvas_length))  # before libllama loads it

        lib, self._log = library_and_log()
        self.lib = lib
        """llama-cpp-python's ctypes module (the tokenizer shares it)."""
        self.gpu_offload = bool(lib.llama_supports_gpu_offload()) if gpu is None else gpu
        self.main_gpu = main_gpu
        """The one GPU to use (cuda:N); None: libllama's default placement."""
        self._handles: dict[str, Any] = {}
        self._finalizer = weakref.finalize(self, _free, lib, self._handles)
        self._context: list[int] = []
        try:
            self._load()
            self._reserve(self.max_canvases * self.canvas_length)
        except BaseException:
            self._finalizer()
            raise

    def _load(self) -> None:
        lib = self.lib
        params = lib.llama_model_default_params()
        params.n_gpu_layers = -1 if self.gpu_offload else 0
        if self.main_gpu is not None:
            params.split_mode, params.main_gpu = lib.LLAMA_SPLIT_MODE_NONE, self.main_gpu
        self._log.clear()
        model = lib.llama_model_load_from_file(os.fsencode(self.path), params)
        if not model:
            raise LlamaError(f"{self.path}: llama.cpp could not load the model: {self._log.reason()}")
        self._handles["model"] = model
        self.vocab_handle = lib.llama_model_get_vocab(model)
        """libllama's llama_vocab pointer (the tokenizer's), valid until close()."""
        self.vocab_size = lib.llama_vocab_n_tokens(self.vocab_handle)
        mask = lib.llama_vocab_mask(self.vocab_handle)
        if mask < 0:
            raise LlamaError(f"{self.path}: llama.cpp found no usable mask token in the model")
        self.mask_token_id: int | None = mask
        self.shift_logits = self._meta("diffusion.shift_logits") in (None, "true")

    def _window_for(self, n: int) -> int:
        """libllama's context size for sequences of n tokens: PROMPT_BUDGET to spare, at most the model's."""
        return min(self.context_length, n + PROMPT_BUDGET)

    def _reserve(self, n: int) -> None:
        """Make libllama's context hold n tokens, or the model's context if less: recreate it larger if needed."""
        n = min(n, self.context_length)
        if n > self.window:
            self._open_context(self._window_for(n))

    def _open_context(self, n: int) -> None:
        """A fresh libllama context and batch for sequences of up to n tokens, holding our context's tokens."""
        preflight(self.path, n)
        lib = self.lib
        _free_context(lib, self._handles)
        self.window = 0
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = n
        cparams.n_seq_max = 1
        cparams.n_threads = cparams.n_threads_batch = self.n_threads
        self._log.clear()
        ctx = lib.llama_init_from_model(self._handles["model"], cparams)
        if not ctx:
            raise LlamaError(f"{self.path}: llama.cpp could not create a {n}-token context ({self._log.reason()}); "
                             "a shorter chat or a lower sampler.max_canvases needs less")
        self._handles["ctx"] = ctx

        # One batch for the whole context, filled once; a step only rewrites the canvas tokens.
        batch = lib.llama_batch_init(n, 0, 1)
        self._handles["batch"] = batch
        self._batch = batch
        np.ctypeslib.as_array(batch.pos, shape=(n,))[:] = np.arange(n, dtype=np.int32)
        np.ctypeslib.as_array(batch.n_seq_id, shape=(n,))[:] = 1
        np.ctypeslib.as_array(batch.logits, shape=(n,))[:] = 1
        for i in range(n):
            batch.seq_id[i][0] = 0
        self._tokens = np.ctypeslib.as_array(batch.token, shape=(n,))
        self._tokens[:len(self._context)] = self._context
        self.window = n

    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = self.lib.llama_model_meta_val_str(self._handles["model"], key.encode(), buf, len(buf))
        return None if n < 0 else buf.value.decode("utf-8", errors="replace")

    @property
    def closed(self) -> bool:
        return "model" not in self._handles

    @property
    def cached_tokens(self) -> int:
        return len(self._context)

    def _check_ids(self, ids: Sequence[int]) -> None:
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise LlamaError(f"token id {bad} is outside the model's {self.vocab_size}-token vocabulary")

    def prefill(self, token_ids: Sequence[int]) -> int:
        """No KV cache: the context is only remembered, in a libllama context made large enough
        for it and max_canvases canvases (at most the model's context); returns how many tokens are new."""
        ids = [int(t) for t in token_ids]
        if len(ids) > self.context_length:
            raise LlamaError(f"the prompt has {len(ids)} tokens, more than the model's "
                             f"{self.context_length}-token context")
        self._check_ids(ids)
        self._reserve(len(ids) + self.max_canvases * self.canvas_length)
        common = 0
        for old, new in zip(self._context, ids, strict=False):  # the common prefix
            if old != new:
                break
            common += 1
        self._context = ids
        self._tokens[:len(ids)] = ids
        return len(ids) - common

    def denoise(self, canvas: torch.Tensor, self_cond: SelfCondition | None) -> torch.Tensor:
        """Logits [len(canvas), vocab_size] of `canvas` placed after the context: a view into
        libllama's buffer, valid until the next call. `canvas` may run past canvas_length: the
        extra tokens are the rest of the generation window (mask tokens), as the reference
        samplers present it. `self_cond` is ignored (mask models have none)."""
        if self.closed:
            raise LlamaError("the llama.cpp backend is closed")
        start = len(self._context)
        n = start + len(canvas)
        if n > self.context_length:
            raise LlamaError(f"{n} tokens do not fit the model's {self.context_length}-token context")
        self._reserve(n)  # libllama would abort on a batch larger than its ubatch
        self._tokens[start:n] = canvas.numpy()
        self._batch.n_tokens = n
        self._log.clear()
        rc = self.lib.llama_decode(self._handles["ctx"], self._batch)
        if rc != 0:
            raise LlamaError(f"llama.cpp failed to decode {n} tokens (code {rc}): {self._log.reason()}")
        pointer = self.lib.llama_get_logits(self._handles["ctx"])
        if not pointer:
            raise LlamaError("llama.cpp returned no logits")
        logits = torch.from_numpy(np.ctypeslib.as_array(pointer, shape=(n, self.vocab_size)))
        if not self.shift_logits:
            return logits[start:n]
        if start > 0:
            return logits[start - 1:n - 1]
        return torch.cat([logits[:1], logits[:n - 1]])  # no context: position 0 reads its own row

    def commit(self, canvas: torch.Tensor) -> None:
        ids = canvas.tolist()
        start = len(self._context)
        if start + len(ids) > self.context_length:
            raise LlamaError(f"the model's context is full ({self.context_length} tokens)")
        self._reserve(start + len(ids))
        self._tokens[start:start + len(ids)] = ids
        self._context += ids

    def close(self) -> None:
        self._finalizer()


def open_backend(gguf: GGUFFile, settings: Settings) -> OpenedBackend:
    """The loader's entry (engine/loader.py): the backend, sized for the sampler's canvases, and the
    model's own tokenizer (its `end_ids` are the turn's end tokens). The checks of stage 1 read the
    already open `gguf`, which is then closed (libllama maps the file itself): it is parsed once."""
    try:
        gpu, main_gpu = llama_device(settings.device)
        info = model_info(gguf)
    finally:
        gguf.close()
    backend = LlamaBackend(gguf.path, max_canvases=settings.sampler.max_canvases, gpu=gpu, main_gpu=main_gpu,
                           info=info)
    try:
        return OpenedBackend(backend, LlamaTokenizer(backend, info.tokenizer_model))
    except BaseException:
        backend.close()
        raise


def llama_device(device: str) -> tuple[bool | None, int | None]:
    """The `device` setting for libllama: (offload, the one GPU to use). auto: offload when it can;
    cpu: no offload; cuda, cuda:N: offload (to GPU N), a LlamaError when this libllama cannot."""
    if device in ("", "auto"):
        return None, None
    if device == "cpu":
        return False, None
    named = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not named:
        raise LlamaError(f"unknown device '{device}' (use auto, cpu, cuda or cuda:N)")
    if not library().llama_supports_gpu_offload():
        raise LlamaError(f"device '{device}' requested but this llama.cpp has no usable GPU (built without "
                         "GPU offload, or no GPU visible): use --device cpu, or rebuild it with "
                         "DG_CHAT_CUDA=1 scripts/setup.sh")
    return True, None if named[1] is None else int(named[1])
