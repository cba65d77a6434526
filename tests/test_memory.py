"""GPU memory estimates (torch_dg/memory.py) on the published Q4_K_M layout, without its 16.8 GB."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
import torch
from gguf.constants import GGMLQuantizationType as Q

from dg_chat.engine.backends.base import BackendError
from dg_chat.engine.backends.torch_dg import backend as torch_backend
from dg_chat.engine.backends.torch_dg.cache import GrowingKVCache
from dg_chat.engine.backends.torch_dg.hparams import HParams
from dg_chat.engine.backends.torch_dg.memory import (
    DEFAULT_CONTEXT,
    MemoryEstimate,
    context_label,
    cuda_memory,
    default_context,
    kv_cache_bytes,
)
from dg_chat.engine.backends.torch_dg.weights import device_bytes
from tests.support.published_layout import published_index, q4_k_m_layout


@pytest.fixture(scope="module")
def published():
    index = published_index()
    return index, HParams.from_gguf(index)


def test_the_published_layout_is_what_the_docs_say(published):
    index, hp = published
    hp.check_tensors(index)  # every tensor the engine needs, with its shape, and nothing else
    assert len(q4_k_m_layout()) == len(hp.expected_shapes()) == 692
    counts = Counter(info.type for info in index.tensors.values())
    assert counts == {Q.F32: 423, Q.Q4_K: 194, Q.Q5_0: 33, Q.Q6_K: 14, Q.Q8_0: 28}
    per_type: dict[Q, int] = defaultdict(int)
    for info in index.tensors.values():
        per_type[info.type] += info.n_bytes
    # gpu-engine.md §5.7, in GB
    expected = {Q.Q4_K: 9.354, Q.Q8_0: 3.863, Q.Q5_0: 2.861, Q.Q6_K: 0.667, Q.F32: 0.046}
    assert {t: round(n / 1e9, 3) for t, n in per_type.items()} == expected
    assert round(sum(per_type.values()) / 1e9, 2) == 16.79


def test_q4_k_m_with_triton_kernels_fits_in_20_5_gb_at_a_32k_context(published):
    index, hp = published
    estimate = cuda_memory(index, hp, "triton", default_context(hp))
    assert estimate.context == DEFAULT_CONTEXT == 32768
    assert estimate.weights == sum(info.n_bytes for info in index.tensors.values())
    assert estimate.total <= 20.5e9
    assert estimate.describe().startswith("18.9 GB with triton kernels (weights 16.8, KV cache 1.0, ")


def test_reference_kernels_hold_dense_tensors_in_bf16_and_need_more(published):
    index, hp = published
    triton, reference = (cuda_memory(index, hp, k, 32768) for k in ("triton", "reference"))
    assert reference.weights == device_bytes(index, torch.device("cuda"), torch.bfloat16)
    assert reference.kv_cache > triton.kv_cache  # the growing cache keeps a rollback margin
    assert reference.activations > triton.activations
    assert reference.total > triton.total


def test_kv_cache_rings_on_sliding_layers_and_grows_on_full_ones(published):
    _, hp = published
    sliding_per_token, full_per_token = 25 * 8 * 256 * 2 * 2, 5 * 2 * 512 * 2 * 2  # spec §1.4: 200 and 20 KiB
    canvas = hp.canvas_length
    static_sliding = hp.window - 1 + canvas + canvas  # the ring, then a canvas of decoder scratch
    assert kv_cache_bytes(hp, "triton", 32768) == (static_sliding * sliding_per_token
                                                   + (32768 + canvas) * full_per_token)
    growing_sliding = hp.window - 1 + GrowingKVCache.ROLLBACK
    assert kv_cache_bytes(hp, "reference", 32768) == growing_sliding * sliding_per_token + 32768 * full_per_token
    for kernels in ("triton", "reference"):
        grown = kv_cache_bytes(hp, kernels, 65536) - kv_cache_bytes(hp, kernels, 32768)
        assert grown == 32768 * full_per_token
    assert kv_cache_bytes(hp, "reference", 100) == 100 * (sliding_per_token + full_per_token)  # shorter than the ring


def test_estimate_parts_add_up():
    estimate = MemoryEstimate("triton", 1024, weights=4, kv_cache=3, activations=2, runtime=1)
    assert estimate.total == 10
    assert context_label(32768) == "32k" and context_label(1000) == "1,000-token"


def test_too_little_gpu_memory_is_one_line_with_the_estimate(published, monkeypatch):
    index, hp = published
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (16 * 10**9, 24 * 10**9))
    with pytest.raises(BackendError) as info:
        torch_backend.check_gpu_memory(index, hp, torch.device("cuda"), "reference")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("published-Q4_K_M.gguf needs about 23.0 GB with reference kernels (weights 20.0, ")
    assert "for a 32k context, but 16.0 GB of GPU memory are free: use --kernels triton, a smaller quant" in message
    with pytest.raises(BackendError, match=r"about 18\.9 GB with triton kernels .* use a smaller quant"):
        torch_backend.check_gpu_memory(index, hp, torch.device("cuda"), "triton")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (20 * 10**9, 24 * 10**9))
    torch_backend.check_gpu_memory(index, hp, torch.device("cuda"), "triton")
