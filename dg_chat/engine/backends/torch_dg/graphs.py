"""CUDA graphs of the decoder step: one per (KV cache, capacity bucket, with or without the
self-conditioning signal), captured from outside the model (gpu-engine.md §6.7).

A replay reads its inputs from persistent buffers (the canvas ids, the previous step's processed
logits and their log-sum-exp, the cache's device-side length), so each step only copies the new
canvas in and replays ~600 kernels with one launch. The logits come back in the graph's own
output buffer; the fused sampler tempers them in place and hands the same buffer back as the next
step's self-conditioning, so nothing of size [canvas, vocab] is copied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dg_chat.engine.backends.torch_dg.cache import StaticKVCache
from dg_chat.engine.backends.torch_dg.model import DiffusionGemma
from dg_chat.engine.sampling import SelfCondition

WARMUP_STEPS = 2
"""Eager runs before a capture: Triton compiles (and autotunes) its kernels outside the graph."""


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    canvas: torch.Tensor
    self_cond: SelfCondition | None
    logits: torch.Tensor


class DecodeGraphs:
    def __init__(self, model: DiffusionGemma):
        self.model = model
        self.pool = torch.cuda.graph_pool_handle()
        self._graphs: dict[tuple[int, int, bool], _Captured] = {}

    def decode(self, canvas: torch.Tensor, cache: StaticKVCache, self_cond: SelfCondition | None) -> torch.Tensor:
        """`model.decode(canvas, cache, self_cond)` by graph replay; the result is the graph's
        output buffer (valid until the next replay)."""
        key = (id(cache), cache.capacity, self_cond is not None)
        captured = self._graphs.get(key)
        if captured is None:
            # buffers of another cache or of a smaller bucket are gone: so are their graphs
            self._graphs = {k: g for k, g in self._graphs.items() if k[:2] == key[:2]}
            captured = self._graphs[key] = self._capture(canvas, cache, self_cond)
        captured.canvas.copy_(canvas)
        if self_cond is not None and captured.self_cond is not None:
            _copy_into(captured.self_cond.logits, self_cond.logits)
            _copy_into(captured.self_cond.lse, _lse(self_cond))
        captured.graph.replay()
        return captured.logits

    @torch.inference_mode()
    def _capture(self, canvas: torch.Tensor, cache: StaticKVCache, self_cond: SelfCondition | None) -> _Captured:
        static_canvas = canvas.clone()
        static_sc = None
        if self_cond is not None:
            static_sc = SelfCondition(logits=self_cond.logits.clone(), probs=None, lse=_lse(self_cond).clone())
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_STEPS):
                self.model.decode(static_canvas, cache, static_sc)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            logits = self.model.decode(static_canvas, cache, static_sc)
        return _Captured(graph, static_canvas, static_sc, logits)


def _lse(self_cond: SelfCondition) -> torch.Tensor:
    return self_cond.lse if self_cond.lse is not None else self_cond.logits.logsumexp(dim=-1)


def _copy_into(dst: torch.Tensor | None, src: torch.Tensor) -> None:
    if dst is not None and dst.data_ptr() != src.data_ptr():
        dst.copy_(src)
