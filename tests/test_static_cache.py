"""The static KV cache of the fast path (ring on sliding layers, bucketed capacity on full ones,
device-side length) against the growing reference cache, through the same forward pass with the
reference ops: prefill longer than the window, commits, rollbacks within and beyond a canvas,
and growth past a capacity bucket all give the reference's logits."""

from __future__ import annotations

import pytest
import torch

from dg_chat.engine.backends.torch_dg.backend import TorchBackend
from dg_chat.engine.backends.torch_dg.cache import StaticKVCache
from dg_chat.gguf.reader import open_gguf
from tests.support.tiny_dg import convert, hf_model

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory):
    model = hf_model(layer_types=("sliding_attention", "sliding_attention", "full_attention"), sliding_window=16)
    return convert(model, tmp_path_factory.mktemp("static"))


def ids(n: int, seed: int) -> list[int]:
    return torch.randint(5, 512, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@torch.no_grad()
def test_static_cache_gives_the_growing_caches_logits(gguf_path, monkeypatch):
    monkeypatch.setattr(StaticKVCache, "BUCKET", 32)  # so that the conversation outgrows a bucket
    growing = TorchBackend(open_gguf(gguf_path), "cpu", "reference")
    static = TorchBackend(open_gguf(gguf_path), "cpu", "reference")
    static.cache = StaticKVCache(static.hp, static.model.device, static.model.dtype)
    canvas = torch.tensor(ids(8, 1))

    def same_logits() -> None:
        assert static.cache.length == growing.cache.length
        torch.testing.assert_close(static.denoise(canvas, None), growing.denoise(canvas, None), atol=1e-5, rtol=0)

    prompt = ids(21, 2)  # longer than the 16-position window, not a multiple of the 8-token chunk
    for backend in (growing, static):
        backend.prefill(prompt)
    same_logits()
    for seed in (3, 4, 5):  # three commits: 45 positions, past the 32-position bucket
        for backend in (growing, static):
            backend.commit(torch.tensor(ids(8, seed)))
    assert static.cache.capacity == 64
    same_logits()

    history = prompt + ids(8, 3) + ids(8, 4) + ids(8, 5)
    within = history[:-5] + ids(2, 6)  # rolls 5 positions back: the ring still holds the window
    assert static.prefill(within) == growing.prefill(within) == 2
    same_logits()
    beyond = history[:20] + ids(3, 7)  # rolls 27 back, more than a canvas: the ring must start over
    assert static.prefill(beyond) == len(beyond)
    growing.prefill(beyond)
    same_logits()
