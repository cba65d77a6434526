"""Mask-token denoising of one canvas (Dream, LLaDA, LLaDA-MoE, RND1), after each family's
published reference sampler.

A canvas starts as mask tokens. Each step runs the model on [context | canvas | the rest of the
generation window, still masks], predicts every masked position of the canvas and unmasks some of
them; after the last step nothing is masked and the canvas is the block's output. The algorithm
decides how many positions a step unmasks and which:

  low_confidence, random   LLaDA (ML-GSAI/LLaDA generate.py): a step unmasks a fixed share of the
      block (`llada_transfer_counts`); the prediction is the argmax, or at temperature T > 0 a
      sample of softmax(logits / T) (the reference's Gumbel-max over exp(logits) / (-log u)^T);
      it unmasks the positions whose predicted token has the highest untempered softmax
      probability (low_confidence) or random ones.
  origin, maskgit_plus, topk_margin, entropy   Dream (generation_utils.py `_sample` and
      `sample_tokens`): time walks linspace(1, eps, steps + 1); `origin` unmasks each masked
      position with probability 1 - s/t, the others unmask int(n_masked * (1 - s/t)) positions
      ranked by the sampled token's probability, the top-2 margin, or the negative entropy
      (lowest entropy first), drawn without replacement from softmax(confidence / alg_temp) when
      alg_temp > 0. The logits are tempered, then top-p and top-k filtered, before all of this.
  rnd1   RND1 (RadicalNumerics/RND1 rnd/sampling.py): after step k of N, floor(n * (N - k) / N)
      positions of the n-token canvas stay masked: the highest-entropy ones; temper, top-k, then
      top-p filter.

Deliberate differences from the references, all visible in tests/test_mask_sampling.py:
- Dream and RND1 denoise their whole generation window at once; here every family goes one canvas
  at a time (the block loop commits canvases), its schedule restarting per canvas, with the rest of
  the window present as masks exactly as LLaDA's semi-autoregressive blocks see it.
- At temperature 0 (greedy) RND1 ranks by the entropy of the model's own distribution: the
  reference clamps the temperature to 1e-8, which makes every entropy 0 and the order arbitrary.
  Filtered-out logits become the dtype's lowest value (as Dream does), not -inf, whose
  0 * log 0 makes RND1's entropies NaN as soon as top-k or top-p is on.
- Categorical draws invert the cumulative probabilities: exact, but cheaper than LLaDA's V
  float64 Gumbel variates per position or torch.multinomial (20x for a 256 x 152k canvas).
- The mask token itself is never predicted (the references rely on the model never choosing it).
- Ties go to the earlier position; all randomness comes from one seeded torch.Generator (the
  references' kinds of draws, not their exact sequence of random numbers).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch

from dg_chat.config import (
    DREAM_ALGORITHMS,
    LLADA_ALGORITHMS,
    RND1_ALGORITHMS,
    Algorithm,
    AlgorithmChoice,
    SamplerSettings,
)
from dg_chat.engine.backends.base import Backend
from dg_chat.engine.events import CanvasStep
from dg_chat.engine.sampling import BlockDenoiser, BlockResult, NonFiniteLogits
from dg_chat.errors import DgChatError
from dg_chat.gguf.architectures import MaskArchitecture, is_mask_architecture

FAMILY_ALGORITHM: dict[MaskArchitecture, Algorithm] = {"dream": "entropy", "llada": "low_confidence",
                                           "llada-moe": "low_confidence", "rnd1": "rnd1"}
"""What `auto` means: the algorithm each family's reference code or demo uses by default."""


def resolve_algorithm(name: AlgorithmChoice, architecture: str) -> Algorithm:
    if name != "auto":
        return name
    if not is_mask_architecture(architecture):
        raise DgChatError(f"no default unmasking algorithm for '{architecture}' models; set --algorithm")
    return FAMILY_ALGORITHM[architecture]


# -- schedules: how many positions a step unmasks ------------------------------------------

def llada_transfer_counts(n_masked: int, steps: int) -> list[int]:
    """LLaDA's `get_num_transfer_tokens`: n_masked spread evenly over the steps, the first
    n_masked % steps steps taking one more."""
    base, remainder = divmod(n_masked, steps)
    return [base + (i < remainder) for i in range(steps)]


def dream_timesteps(steps: int, eps: float) -> torch.Tensor:
    """Dream's time grid, float32 as the reference builds it."""
    return torch.linspace(1, eps, steps + 1)


def dream_transfer_count(n_masked: int, step: int, timesteps: torch.Tensor) -> int:
    """int(n_masked * (1 - s/t)) for step < last, every masked position on the last step."""
    steps = len(timesteps) - 1
    if step == steps - 1:
        return n_masked
    t, s = timesteps[step], timesteps[step + 1]
    return int(torch.tensor(float(n_masked)) * (1 - s / t))


def dream_transfer_probability(step: int, timesteps: torch.Tensor) -> float:
    """`origin`: each masked position is unmasked with probability 1 - s/t (1 on the last step)."""
    steps = len(timesteps) - 1
    if step == steps - 1:
        return 1.0
    return float(1 - timesteps[step + 1] / timesteps[step])


def rnd1_kept_masked(n_total: int, step: int, steps: int) -> int:
    """Positions still masked after 1-based step `step` of `steps`: floor(n_total * (steps - step) / steps),
    computed in float32 as the reference does."""
    return int((torch.tensor(n_total) * ((steps - step) / steps)).long())


# -- token distributions --------------------------------------------------------------------

def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """In place: every logit below the k-th largest of its row set to the dtype's lowest value."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill_(logits < kth, torch.finfo(logits.dtype).min)


def filter_top_p(logits: torch.Tensor, p: float, buffer: torch.Tensor | None = None) -> torch.Tensor:
    """In place: keep the most likely tokens of each row until their probabilities pass p (the
    token that crosses p included, so at least one); set the rest to the dtype's lowest value.
    `buffer` (like `logits`) receives the softmax on the way.

    Exact, but it ranks only the top candidates of each row (128, then 8x more while some row's
    cut lies beyond them): sorting whole 152k-token rows costs seconds per step."""
    if p >= 1:
        return logits
    probs = torch.ops.aten._softmax.out(logits, -1, False, out=torch.empty_like(logits) if buffer is None else buffer)
    k = min(128, logits.shape[-1])
    while True:
        values, ids = torch.topk(logits, k, dim=-1)
        candidates = probs.gather(-1, ids)
        keep = candidates.cumsum(dim=-1) - candidates <= p  # the better tokens' probability is within p
        if k == logits.shape[-1] or not keep[:, -1].any():
            break
        k = min(8 * k, logits.shape[-1])
    lowest = torch.finfo(logits.dtype).min
    return logits.fill_(lowest).scatter_(-1, ids, values.masked_fill_(~keep, lowest))


class Distribution:
    """softmax of every row of `logits` [m, V], kept as what the algorithms read from it.

    This is the hot path of a step (m x V is 256 x 152k for Dream), so it makes three passes over
    the logits and writes nothing of that size but `buffer`: torch's fused softmax kernel (its
    out= variant: the allocating one costs 3x for these sizes), numpy's argmax and row dot
    products (several times faster than torch's CPU kernels here). Probabilities of single tokens
    are recomputed from `logits`, which must stay unchanged while the Distribution is in use."""

    def __init__(self, logits: torch.Tensor, buffer: torch.Tensor):
        self.logits = logits
        self._probs: torch.Tensor | None = torch.ops.aten._softmax.out(logits, -1, False, out=buffer)
        self.argmax = torch.from_numpy(logits.numpy().argmax(axis=-1))
        self.top = logits.gather(-1, self.argmax[:, None]).squeeze(-1)
        self.best_probability = self._probs.gather(-1, self.argmax[:, None]).squeeze(-1)
        expected_logit = torch.from_numpy(np.einsum("ij,ij->i", self._probs.numpy(), logits.numpy()))
        # H = log Z - E[logit], with Z = sum exp(logit) and log Z = top - log p(top)
        self.entropy = (self.top - self.best_probability.log() - expected_logit).clamp_(min=0)
        """Per row, in nats."""

    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        """p(ids[i]) on row i."""
        return torch.exp(self.logits.gather(-1, ids[:, None]).squeeze(-1) - self.top) * self.best_probability

    def margin(self) -> torch.Tensor:
        """p(most likely) - p(second most likely): the top-2 of the sorted probabilities."""
        rows = torch.arange(len(self.argmax))
        self.logits[rows, self.argmax] = torch.finfo(self.logits.dtype).min  # hide the top for a moment
        second = self.logits.amax(dim=-1)
        self.logits[rows, self.argmax] = self.top
        return self.best_probability * (1 - torch.exp(second - self.top))

    def sample(self, generator: torch.Generator, rows: torch.Tensor | None = None) -> torch.Tensor:
        """One token per row (or per row of `rows`), drawn by inverting the cumulative
        probabilities: exact like torch.multinomial, which is ~20x slower for these sizes.
        Only once: the cumulative sums overwrite the probabilities."""
        if self._probs is None:
            raise RuntimeError("Distribution.sample() already used its probabilities")
        cumulative = self._probs.cumsum_(dim=-1) if rows is None else self._probs[rows].cumsum_(dim=-1)
        self._probs = None
        u = torch.rand(len(cumulative), generator=generator, dtype=cumulative.dtype) * cumulative[:, -1]
        drawn = torch.searchsorted(cumulative, u[:, None], right=True).squeeze(-1)
        return drawn.clamp_(max=cumulative.shape[-1] - 1)


def top_positions(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores, ties to the earlier position."""
    return torch.sort(scores, descending=True, stable=True).indices[:k]


# -- one step -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class UnmaskingStep:
    """What one step decides for the m still-masked positions of a canvas (every algorithm's record)."""

    chosen: torch.Tensor
    """int64 [k]: the masked positions unmasked now, as indices into the m masked positions."""
    tokens: torch.Tensor
    """int64 [k]: the tokens they get."""
    prediction: torch.Tensor
    """int64 [m]: the predicted token of every masked position (the canvas's best guess, shown live)."""
    entropy: torch.Tensor
    """float32 [m]: entropy of every masked position's distribution, in nats."""


_SCRATCH: weakref.WeakKeyDictionary[Backend, dict[str, torch.Tensor]] = weakref.WeakKeyDictionary()
"""Per backend (one turn at a time each): the sampler's [canvas, vocab] work buffers."""


class MaskSampler:
    """Denoises a canvas of mask tokens with the configured algorithm (see the module docstring)."""

    def __init__(self, settings: SamplerSettings, *, backend: Backend, generator: torch.Generator):
        if backend.mask_token_id is None:
            raise DgChatError(f"{backend.path}: the model has no mask token (tokenizer.ggml.mask_token_id)")
        self.settings = settings
        self.algorithm = resolve_algorithm(settings.algorithm, backend.architecture)
        self.generator = generator
        self.mask_id = backend.mask_token_id
        self.steps = settings.max_steps
        self.timesteps = dream_timesteps(self.steps, settings.eps)
        # [canvas, vocab] float32 work buffers, allocated (and page-faulted in, by zeroing) once per
        # backend: writing fresh ones costs as much as the softmax itself, on every step.
        shape = (backend.canvas_length, backend.vocab_size)
        buffers = _SCRATCH.get(backend)
        if buffers is None or buffers["probs"].shape != shape:
            buffers = _SCRATCH[backend] = {"probs": torch.zeros(shape), "rows": torch.zeros(shape)}
        self._buffers = buffers
        # The generation window (the canvases the loop can produce) is fixed once the prompt is in.
        n = backend.canvas_length
        room = (backend.context_length - backend.cached_tokens) // n
        self.window_end = backend.cached_tokens + max(1, min(settings.max_canvases, room)) * n

    def denoise_block(self, backend: Backend, block: int) -> BlockDenoiser:
        n = backend.canvas_length
        trailing = max(0, self.window_end - backend.cached_tokens - n)
        window = torch.full((n + trailing,), self.mask_id, dtype=torch.int64)
        canvas = window[:n]  # a view: unmasking writes straight into the model input
        prediction = canvas.clone()
        llada_counts = llada_transfer_counts(n, self.steps)
        step = 0
        for step in range(1, self.steps + 1):
            masked = (canvas == self.mask_id).nonzero().squeeze(-1)
            logits = backend.denoise(window, None)[:n]
            if not torch.isfinite(logits.sum()):  # one pass, one scalar per step
                raise NonFiniteLogits(backend.path)
            rows = logits if len(masked) == n else torch.index_select(logits, 0, masked, out=self._rows(len(masked)))
            decided = self._step(rows, step, n, llada_counts)
            canvas[masked[decided.chosen]] = decided.tokens
            new_prediction = canvas.clone()
            new_prediction[masked] = decided.prediction
            changed = new_prediction != prediction
            prediction = new_prediction
            yield CanvasStep(
                block=block, step=step, max_steps=self.steps,
                tokens=canvas.to(torch.int32).numpy(),
                argmax=prediction.to(torch.int32).numpy(),
                accepted=(canvas != self.mask_id).numpy(),
                changed=changed.numpy(),
                mean_entropy=float(decided.entropy.mean()),
            )
            if len(decided.chosen) == len(masked):  # nothing left to unmask
                break
        return BlockResult(canvas.clone(), step)

    def _step(self, rows: torch.Tensor, step: int, n_canvas: int, llada_counts: list[int]) -> UnmaskingStep:
        """For the masked rows' logits [m, V] of 1-based `step`: which rows to unmask, their
        tokens, the prediction of every row and the entropy of every row's distribution."""
        if self.algorithm in LLADA_ALGORITHMS:
            return self._llada(rows, llada_counts[step - 1])
        if self.algorithm in DREAM_ALGORITHMS:
            return self._dream(rows, step - 1)
        if self.algorithm in RND1_ALGORITHMS:
            return self._rnd1(rows, step, n_canvas)
        raise DgChatError(f"unknown unmasking algorithm {self.algorithm!r}")

    def _rows(self, rows: int) -> torch.Tensor:
        return self._buffers["rows"][:rows]

    def _tempered(self, rows: torch.Tensor, temperature: float) -> torch.Tensor:
        """In place: rows / temperature (0: as they are), with [MASK] never an answer. (The
        lowest-value sentinel comes after the division, which would turn it into -inf.)"""
        logits = rows.div_(temperature) if temperature > 0 else rows
        logits[:, self.mask_id] = torch.finfo(logits.dtype).min
        return logits

    def _distribution(self, logits: torch.Tensor) -> Distribution:
        return Distribution(logits, self._buffers["probs"][:len(logits)])

    def _llada(self, rows: torch.Tensor, count: int) -> UnmaskingStep:
        t = self.settings.temperature
        dist = self._distribution(self._tempered(rows, 0))  # LLaDA ranks by the untempered softmax
        if t > 0:  # sample softmax(rows / t), as LLaDA's Gumbel-max does (a copy: LLaDA's canvas is small)
            x0 = self._distribution(self._tempered(rows.clone(), t)).sample(self.generator)
        else:
            x0 = dist.argmax
        if self.algorithm == "low_confidence":
            confidence = dist.probability(x0)
        else:
            confidence = torch.rand(len(rows), generator=self.generator)
        chosen = top_positions(confidence, count)
        return UnmaskingStep(chosen, x0[chosen], x0, dist.entropy)

    def _dream(self, rows: torch.Tensor, step: int) -> UnmaskingStep:
        s = self.settings
        logits = self._tempered(rows, s.temperature)
        probs = self._buffers["probs"][:len(rows)]
        dist = self._distribution(filter_top_k(filter_top_p(logits, s.top_p, probs), s.top_k))  # Dream's order
        x0 = dist.argmax
        if self.algorithm == "origin":
            move = torch.rand(len(rows), generator=self.generator) < dream_transfer_probability(step, self.timesteps)
            chosen = move.nonzero().squeeze(-1)
            x0 = self._sampled_at(dist, x0, chosen)
            return UnmaskingStep(chosen, x0[chosen], x0, dist.entropy)
        if self.algorithm == "maskgit_plus":
            if s.temperature > 0:
                x0 = dist.sample(self.generator)
            confidence = dist.probability(x0)
        elif self.algorithm == "topk_margin":
            confidence = dist.margin()
        else:
            confidence = -dist.entropy
        count = dream_transfer_count(len(rows), step, self.timesteps)
        if s.alg_temp > 0 and count > 0:
            weights = torch.softmax(confidence / s.alg_temp, dim=-1)
            chosen = torch.multinomial(weights, count, replacement=False, generator=self.generator)
        else:
            chosen = top_positions(confidence, count)
        if self.algorithm != "maskgit_plus":  # margin and entropy do not depend on the draw
            x0 = self._sampled_at(dist, x0, chosen)
        return UnmaskingStep(chosen, x0[chosen], x0, dist.entropy)

    def _sampled_at(self, dist: Distribution, x0: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """`x0` with tokens drawn at the `chosen` positions only (at T > 0): the others are not
        kept, so drawing them would only cost time (same distribution at the kept positions)."""
        if self.settings.temperature <= 0 or not len(chosen):
            return x0
        x0 = x0.clone()
        x0[chosen] = dist.sample(self.generator, chosen)
        return x0

    def _rnd1(self, rows: torch.Tensor, step: int, n_canvas: int) -> UnmaskingStep:
        s = self.settings
        logits = self._tempered(rows, s.temperature)
        probs = self._buffers["probs"][:len(rows)]
        dist = self._distribution(filter_top_p(filter_top_k(logits, s.top_k), s.top_p, probs))  # RND1's order
        x0 = dist.sample(self.generator) if s.temperature > 0 else dist.argmax
        keep = rnd1_kept_masked(n_canvas, step, self.steps)
        chosen = top_positions(-dist.entropy, max(0, len(rows) - keep))
        return UnmaskingStep(chosen, x0[chosen], x0, dist.entropy)
