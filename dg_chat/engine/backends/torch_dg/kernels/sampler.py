"""The fused sampler's Triton kernels: everything a denoising step needs from the [C, V] logits
in one read of them (gpu-engine.md §6.5).

`row_statistics` runs two kernels:

1. `_row_partials_kernel`, grid (row blocks, vocabulary chunks): each program walks its slice of
   V one tile at a time and keeps, per row, online values of y = logits / T: the max and its first
   index, r = Σ e^(y-max) over all but that one element, d = Σ e^(y-max)·(y-max), and the
   Gumbel-max draw argmax(y - log(-log u)). It may write y back in place (the processed logits
   that self-conditioning needs), so the logits are read once and written at most once. It also
   keeps each tile's two largest elements: the candidates of self-conditioning's shortcut for
   settled rows (`gemm.SettledRows`), 256 a row on a GPU at V = 262144.
2. `_combine_kernel`, grid (row blocks,): merges a row's chunk partials into argmax, lse, entropy
   and the draw, and draws the row's renoise token.

Keeping r without the max's own 1 is what makes the entropy H = log1p(r) - d / (1 + r) accurate
for peaked rows (H near 0, where the entropy bound and the stop rule look): `lse - Σp·y` would
lose it to cancellation against a |y| of up to 75.

Random numbers come from Triton's counter-based Philox (`tl.randint`, `tl.rand`): the key is the
turn's seed, the counter is (the sampler's step counter, a stream id, the element index), all read
from device tensors so that a captured CUDA graph sees new values on every replay. Nothing random
is ever materialised at [C, V].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dg_chat.engine.backends.torch_dg.kernels import runtime
from dg_chat.engine.backends.torch_dg.kernels.runtime import tl, triton

GUMBEL, RENOISE, CANVAS = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)
"""Random streams of one step counter: the categorical draw, the renoise tokens, a block's first canvas."""
STREAMS = tl.constexpr(4)


@dataclass(frozen=True, slots=True)
class RowStatistics:
    """Per-row results of one read of the logits; every tensor is [C] on the logits' device."""

    argmax: torch.Tensor
    """int64: argmax of y = logits / T, first index on ties (like torch.argmax)."""
    lse: torch.Tensor
    """float32: logsumexp(y)."""
    entropy: torch.Tensor
    """float32: entropy of softmax(y) in nats, >= 0."""
    draw: torch.Tensor
    """int64: a categorical draw from softmax(y) (Gumbel-max)."""
    noise: torch.Tensor
    """int64: a uniform random token in [0, V), the renoise candidate of the row."""
    candidates: torch.Tensor
    """int64 [C, K]: the columns of the two largest y of each tile of the row (distinct; V where a
    tile has fewer than two finite values), K = `candidate_count(C, V)`. They hold the row's
    argmax, and nearly all of its mass when the row is peaked."""


@triton.jit
def _philox_offset(counter, stream, index):
    """The 64-bit Philox counter of one random number: (step counter, stream) in the high word,
    the element index (< 2**32) in the low word."""
    return ((counter * STREAMS + stream) << 32) + index


@triton.jit
def _uniform_tokens(seed, counter, stream: tl.constexpr, index, vocab_size):
    """Uniform tokens in [0, vocab_size): exact for a power-of-two V (262144), otherwise biased
    by at most V / 2**32."""
    bits = tl.randint(seed, _philox_offset(counter, stream, index)).to(tl.uint32)
    return (bits % vocab_size.to(tl.uint32)).to(tl.int64)


@triton.jit
def _log1p(x):
    """log(1 + x), accurate for tiny x (Goldberg's correction; the interpreter has no log1p)."""
    u = 1.0 + x
    exact = u == 1.0
    return tl.where(exact, x, tl.log(u) * (x / tl.where(exact, 1.0, u - 1.0)))


@triton.jit
def _merge(best, best_at, rest, dev, other, other_at, other_rest, other_dev):
    """Merge the online values of a later part of the row into those of an earlier part; the
    earlier part keeps the argmax on ties."""
    later_wins = other > best
    top = tl.maximum(best, other)
    frame = tl.where(top == float("-inf"), 0.0, top)
    # move the part that lost to the winner's frame: e^(y-low) -> e^(y-top) and (y-low) -> (y-top)
    low = tl.where(later_wins, best, other)
    low_rest = tl.where(later_wins, rest, other_rest)
    low_dev = tl.where(later_wins, dev, other_dev)
    scale = tl.exp(low - frame)
    low_sum = 1.0 + low_rest
    shift = tl.where(scale > 0.0, (low - frame) * low_sum, 0.0)
    new_rest = tl.where(later_wins, other_rest, rest) + scale * low_sum
    new_dev = tl.where(later_wins, other_dev, dev) + scale * (low_dev + shift)
    return top, tl.where(later_wins, other_at, best_at), new_rest, new_dev


@triton.jit
def _row_partials_kernel(logits_ptr, temperature_ptr, seed_ptr, counter_ptr,
                         max_ptr, arg_ptr, rest_ptr, dev_ptr, gumbel_ptr, draw_ptr, candidates_ptr,
                         n_rows, n_cols, chunk_cols, n_chunks, n_candidates,
                         BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr, WRITE_PROCESSED: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    chunk = tl.program_id(1)
    row_ok = rows < n_rows
    row_start = rows.to(tl.int64) * n_cols
    temperature = tl.load(temperature_ptr)
    seed = tl.load(seed_ptr)
    counter = tl.load(counter_ptr)
    best = tl.full((BLOCK_R,), float("-inf"), tl.float32)
    best_at = tl.zeros((BLOCK_R,), tl.int64)
    rest = tl.zeros((BLOCK_R,), tl.float32)  # Σ e^(y - best), less the best element's own 1
    dev = tl.zeros((BLOCK_R,), tl.float32)  # Σ e^(y - best) * (y - best)
    gumbel = tl.full((BLOCK_R,), float("-inf"), tl.float32)
    draw = tl.zeros((BLOCK_R,), tl.int64)
    n_bad = tl.zeros((BLOCK_R,), tl.int32)  # NaN/inf logits: damaged weights, reported through `dev`
    start = chunk * chunk_cols
    end = tl.minimum(start + chunk_cols, n_cols)
    for col0 in range(start, end, BLOCK_V):
        cols = col0 + tl.arange(0, BLOCK_V)
        mask = row_ok[:, None] & (cols < end)[None, :]
        offsets = row_start[:, None] + cols[None, :]
        y = tl.math.div_rn(tl.load(logits_ptr + offsets, mask=mask, other=float("-inf")), temperature)
        if WRITE_PROCESSED:
            tl.store(logits_ptr + offsets, y, mask=mask)
        # non-finite values leave the max/argmax/draw (a GPU's max would drop NaN anyway) and turn
        # the row's entropy into NaN below, which the sampler reports
        bad = mask & ~(tl.abs(y) < float("inf"))
        n_bad += tl.sum(bad.to(tl.int32), axis=1)
        y = tl.where(bad, float("-inf"), y)
        # the tile's own (max, rest, dev), then merged into the running values
        tile_best = tl.max(y, axis=1)
        tile_at = tl.argmax(y, axis=1, tie_break_left=True)
        frame = tl.where(tile_best == float("-inf"), 0.0, tile_best)
        shifted = y - frame[:, None]
        e = tl.exp(shifted)
        is_best = tl.arange(0, BLOCK_V)[None, :] == tile_at[:, None]
        tile_rest = tl.sum(tl.where(is_best, 0.0, e), axis=1)
        tile_dev = tl.sum(e * tl.where(e > 0.0, shifted, 0.0), axis=1)  # e = 0 also where y = -inf
        best, best_at, rest, dev = _merge(best, best_at, rest, dev, tile_best, col0 + tile_at, tile_rest, tile_dev)
        second = tl.where(is_best, float("-inf"), y)
        second_best = tl.max(second, axis=1)
        second_at = tl.argmax(second, axis=1, tie_break_left=True)
        at = rows.to(tl.int64) * n_candidates + 2 * (col0 // BLOCK_V)
        tl.store(candidates_ptr + at, tl.where(tile_best > float("-inf"), col0 + tile_at, n_cols), mask=row_ok)
        tl.store(candidates_ptr + at + 1, tl.where(second_best > float("-inf"), col0 + second_at, n_cols),
                 mask=row_ok)
        # Gumbel-max. u = 0 gives -inf (never drawn); a float32 u < 1 caps the noise at ~16.6,
        # which moves at most Σ min(p, 6e-8) of a row's probability: nothing in the peaked rows
        # that the entropy bound accepts
        u = tl.rand(seed, _philox_offset(counter, GUMBEL, offsets))
        z = tl.where(mask, y - tl.log(-tl.log(u)), float("-inf"))
        tile_gumbel = tl.max(z, axis=1)
        draw = tl.where(tile_gumbel > gumbel, col0 + tl.argmax(z, axis=1), draw)
        gumbel = tl.maximum(gumbel, tile_gumbel)
    dev = tl.where(n_bad > 0, float("nan"), dev)
    out = rows * n_chunks + chunk
    tl.store(max_ptr + out, best, mask=row_ok)
    tl.store(arg_ptr + out, best_at, mask=row_ok)
    tl.store(rest_ptr + out, rest, mask=row_ok)
    tl.store(dev_ptr + out, dev, mask=row_ok)
    tl.store(gumbel_ptr + out, gumbel, mask=row_ok)
    tl.store(draw_ptr + out, draw, mask=row_ok)


@triton.jit
def _combine_kernel(max_ptr, arg_ptr, rest_ptr, dev_ptr, gumbel_ptr, draw_ptr, seed_ptr, counter_ptr,
                    argmax_ptr, lse_ptr, entropy_ptr, sample_ptr, noise_ptr,
                    n_rows, n_cols, n_chunks,
                    BLOCK_R: tl.constexpr, BLOCK_CHUNKS: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    chunks = tl.arange(0, BLOCK_CHUNKS)
    row_ok = rows < n_rows
    mask = row_ok[:, None] & (chunks < n_chunks)[None, :]
    at = rows[:, None] * n_chunks + chunks[None, :]
    part_best = tl.load(max_ptr + at, mask=mask, other=float("-inf"))
    part_rest = tl.load(rest_ptr + at, mask=mask, other=0.0)
    part_dev = tl.load(dev_ptr + at, mask=mask, other=0.0)
    # the first chunk holding the row's max holds its argmax; every other chunk counts whole
    best = tl.max(part_best, axis=1)
    winner = chunks[None, :] == tl.argmax(part_best, axis=1, tie_break_left=True)[:, None]
    frame = tl.where(best == float("-inf"), 0.0, best)
    scale = tl.exp(part_best - frame[:, None])
    gap = tl.where(scale > 0.0, part_best - frame[:, None], 0.0)  # 0 for empty chunks (-inf)
    part_sum = tl.where(winner, part_rest, 1.0 + part_rest)
    rest = tl.sum(scale * part_sum, axis=1)
    dev = tl.sum(scale * (part_dev + gap * (1.0 + part_rest)), axis=1)
    argmax = tl.sum(tl.where(winner, tl.load(arg_ptr + at, mask=mask, other=0), 0), axis=1)
    log_sum = _log1p(rest)
    entropy = log_sum - dev / (1.0 + rest)
    entropy = tl.where(entropy < 0.0, 0.0, entropy)  # not tl.maximum, which would drop a NaN
    part_gumbel = tl.load(gumbel_ptr + at, mask=mask, other=float("-inf"))
    drawn = chunks[None, :] == tl.argmax(part_gumbel, axis=1, tie_break_left=True)[:, None]
    sample = tl.sum(tl.where(drawn, tl.load(draw_ptr + at, mask=mask, other=0), 0), axis=1)
    noise = _uniform_tokens(tl.load(seed_ptr), tl.load(counter_ptr), RENOISE, rows.to(tl.int64), n_cols)
    tl.store(argmax_ptr + rows, argmax, mask=row_ok)
    tl.store(lse_ptr + rows, best + log_sum, mask=row_ok)
    tl.store(entropy_ptr + rows, entropy, mask=row_ok)
    tl.store(sample_ptr + rows, sample, mask=row_ok)
    tl.store(noise_ptr + rows, noise, mask=row_ok)


@triton.jit
def _canvas_kernel(out_ptr, seed_ptr, counter_ptr, n, vocab_size, BLOCK: tl.constexpr):
    index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tokens = _uniform_tokens(tl.load(seed_ptr), tl.load(counter_ptr), CANVAS, index.to(tl.int64), vocab_size)
    tl.store(out_ptr + index, tokens, mask=index < n)


@dataclass(frozen=True)
class _Layout:
    block_rows: int
    block_cols: int
    chunk_cols: int
    chunks: int
    combine_rows: int


def _layout(n_rows: int, n_cols: int) -> _Layout:
    """Tile sizes. On a GPU: one row per program and ~32 chunks per row, so 256 rows make
    ~8k programs of 8k columns each. Under the interpreter: few programs of up to 64k elements
    (each program costs Python time, a big tile only numpy time)."""
    interpreting = runtime.interpreting()
    cols = min(1024 if interpreting else 2048, triton.next_power_of_2(n_cols))
    rows = min(triton.next_power_of_2(n_rows), 2**16 // cols) if interpreting else 1
    chunk_cols = triton.cdiv(triton.cdiv(n_cols, 2 if interpreting else 32), cols) * cols
    chunks = triton.cdiv(n_cols, chunk_cols)
    combine_rows = 2**16 // triton.next_power_of_2(chunks) if interpreting else 64
    return _Layout(rows, cols, chunk_cols, chunks, min(combine_rows, triton.next_power_of_2(n_rows)))


def candidate_count(n_rows: int, n_cols: int) -> int:
    """K of `RowStatistics.candidates`: two per tile of a row."""
    return 2 * triton.cdiv(n_cols, _layout(n_rows, n_cols).block_cols)


def largest_candidates(logits: torch.Tensor) -> torch.Tensor:
    """int64 [C, K]: the K = `candidate_count` largest columns of each row of logits [C, V], in
    torch: candidates as many as the fused sampler's, holding at least their mass, where it did
    not give them (another sampler, a benchmark's made-up signal)."""
    return logits.topk(candidate_count(*logits.shape), dim=-1).indices


def row_statistics(logits: torch.Tensor, temperature: torch.Tensor, seed: torch.Tensor, counter: torch.Tensor,
                   *, write_processed: bool = True) -> RowStatistics:
    """Argmax, logsumexp, entropy, a Gumbel-max draw, a renoise token and the settled-row
    candidates per row of y = logits / T, in two launches and without a host synchronisation.

    logits: float32 [C, V], contiguous (soft-capped model output); with `write_processed` it is
    overwritten with y, the processed logits (y = logits / T correctly rounded, as torch divides).
    temperature: float32, one element. seed, counter: int64, one element each (the RNG key and
    the sampler's step counter); equal (seed, counter) give equal draws.
    """
    n_rows, n_cols = logits.shape
    if logits.dtype != torch.float32 or not logits.is_contiguous():
        raise ValueError(f"logits must be contiguous float32 [C, V], got {logits.dtype} {tuple(logits.shape)}")
    if n_rows * n_cols >= 2**32:
        raise ValueError("the Philox counter holds the element index in 32 bits: C * V must be < 2**32")
    layout = _layout(n_rows, n_cols)
    device = logits.device
    partial = (n_rows, layout.chunks)
    best, rest, dev, gumbel = (torch.empty(partial, dtype=torch.float32, device=device) for _ in range(4))
    best_at, draw = (torch.empty(partial, dtype=torch.int64, device=device) for _ in range(2))
    candidates = torch.empty(n_rows, candidate_count(n_rows, n_cols), dtype=torch.int64, device=device)
    runtime.launch(_row_partials_kernel, (triton.cdiv(n_rows, layout.block_rows), layout.chunks),
                   logits, temperature, seed, counter, best, best_at, rest, dev, gumbel, draw, candidates,
                   n_rows, n_cols, layout.chunk_cols, layout.chunks, candidates.shape[1],
                   BLOCK_R=layout.block_rows, BLOCK_V=layout.block_cols, WRITE_PROCESSED=write_processed)
    stats = RowStatistics(
        argmax=torch.empty(n_rows, dtype=torch.int64, device=device),
        lse=torch.empty(n_rows, dtype=torch.float32, device=device),
        entropy=torch.empty(n_rows, dtype=torch.float32, device=device),
        draw=torch.empty(n_rows, dtype=torch.int64, device=device),
        noise=torch.empty(n_rows, dtype=torch.int64, device=device),
        candidates=candidates,
    )
    runtime.launch(_combine_kernel, (triton.cdiv(n_rows, layout.combine_rows),),
                   best, best_at, rest, dev, gumbel, draw, seed, counter,
                   stats.argmax, stats.lse, stats.entropy, stats.draw, stats.noise,
                   n_rows, n_cols, layout.chunks,
                   BLOCK_R=layout.combine_rows, BLOCK_CHUNKS=triton.next_power_of_2(layout.chunks))
    return stats


def uniform_canvas(length: int, vocab_size: int, seed: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """int64 [length] uniform random tokens in [0, vocab_size) on seed's device, keyed by
    (seed, counter) like `row_statistics` (a stream of their own): a block's first canvas."""
    out = torch.empty(length, dtype=torch.int64, device=seed.device)
    block = min(triton.next_power_of_2(length), 1024)
    runtime.launch(_canvas_kernel, (triton.cdiv(length, block),), out, seed, counter, length, vocab_size, BLOCK=block)
    return out
