"""CUDA graphs of the decoder step over one static KV cache: one per (capacity bucket, with or
without the self-conditioning signal), captured from outside the model (gpu-engine.md §6.7).

A replay reads its inputs from persistent buffers (the canvas ids, the previous step's processed
logits, their log-sum-exp and settled-row candidates, the cache's device-side length), so each step copies only the new
canvas in and replays ~600 kernels with one launch. Every graph writes its logits into one
buffer that is also the self-conditioning input of the graph with the signal: the fused sampler
tempers the logits in place and hands that same buffer back, so nothing of size [canvas, vocab]
is ever copied between steps.
"""

from __future__ import annotations

import torch

from dg_chat.engine.backends.base import SelfCondition
from dg_chat.engine.backends.torch_dg.cache import StaticKVCache
from dg_chat.engine.backends.torch_dg.kernels.sampler import candidate_count, largest_candidates
from dg_chat.engine.backends.torch_dg.model import DiffusionGemma

WARMUP_STEPS = 2
"""Eager runs before a capture: Triton compiles (and autotunes) its kernels outside the graph."""


class DecodeGraphs:
    def __init__(self, model: DiffusionGemma, cache: StaticKVCache):
        self.model, self.cache = model, cache
        hp, device = model.hp, model.device
        self.canvas = torch.zeros(hp.canvas_length, dtype=torch.int64, device=device)
        self.logits = torch.zeros(hp.canvas_length, hp.vocab_size, dtype=torch.float32, device=device)
        """The graphs' output, and the processed logits the next step is conditioned on."""
        candidates = torch.zeros(hp.canvas_length, candidate_count(hp.canvas_length, hp.vocab_size),
                                 dtype=torch.int64, device=device)
        self.self_cond = SelfCondition(self.logits, lse=torch.zeros(hp.canvas_length, device=device),
                                       candidates=candidates)
        self.pool = torch.cuda.graph_pool_handle()
        self._graphs: dict[tuple[int, bool], torch.cuda.CUDAGraph] = {}

    def decode(self, canvas: torch.Tensor, self_cond: SelfCondition | None) -> torch.Tensor:
        """`model.decode(canvas, cache, self_cond)` by graph replay; the result is `self.logits`
        (overwritten by the next replay)."""
        key = (self.cache.capacity, self_cond is not None)
        self.canvas.copy_(canvas)
        if self_cond is not None:
            if self_cond.logits.data_ptr() != self.logits.data_ptr():
                self.logits.copy_(self_cond.logits)
            held = self.self_cond.candidates
            assert self.self_cond.lse is not None and held is not None
            self.self_cond.lse.copy_(self_cond.lse if self_cond.lse is not None else self_cond.logits.logsumexp(-1))
            held.copy_(self_cond.candidates if self_cond.candidates is not None
                       else largest_candidates(self_cond.logits))
        graph = self._graphs.get(key)
        if graph is None:
            # the buffers of a smaller bucket are gone: so are its graphs
            self._graphs = {k: g for k, g in self._graphs.items() if k[0] == key[0]}
            graph = self._graphs[key] = self._capture(self_cond is not None)
        graph.replay()
        return self.logits

    @torch.inference_mode()
    def _capture(self, with_signal: bool) -> torch.cuda.CUDAGraph:
        self_cond = self.self_cond if with_signal else None
        signal = self.logits.clone()  # the warm-up overwrites the input it reads
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_STEPS):
                self.model.decode(self.canvas, self.cache, self_cond, self.logits)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self.model.decode(self.canvas, self.cache, self_cond, self.logits)
        self.logits.copy_(signal)
        return graph
