"""Mask-token denoising of one canvas (Dream, LLaDA, LLaDA-MoE, RND1), after each family's
published reference sampler.

A canvas starts as mask tokens. Each step runs the model on [context | canvas | the rest of the
generation window, still masks], predicts every masked position of the canvas and unmasks some of
them; after the last step nothing is masked and the canvas is the block's output. The algorithm
decides how many positions a step unmasks and which:

  low_confidence, random   LLaDA (ML-GSAI/LLaDA generate.py): a step unmasks a fixed share of the
      block (`llada_transfer_counts`); the prediction is the argmax, or at temperature T > 0 the
      Gumbel-max sample of exp(logits) / (-log u)^T in float64; it unmasks the positions whose
      predicted token has the highest softmax probability (low_confidence) or random ones.
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
- The mask token itself is never predicted (the references rely on the model never choosing it).
- Ties go to the earlier position; all randomness comes from one seeded torch.Generator (the
  references' kinds of draws, not their exact sequence of random numbers).
"""

from __future__ import annotations

import torch

from dg_chat.config import SamplerSettings
from dg_chat.engine.backends.base import Backend
from dg_chat.engine.events import CanvasStep
from dg_chat.engine.sampling import BlockDenoiser, BlockResult
from dg_chat.errors import DgChatError

LLADA_ALGORITHMS = frozenset({"low_confidence", "random"})
DREAM_ALGORITHMS = frozenset({"origin", "maskgit_plus", "topk_margin", "entropy"})
FAMILY_ALGORITHM = {"dream": "entropy", "llada": "low_confidence", "llada-moe": "low_confidence", "rnd1": "rnd1"}
"""What `auto` means: the algorithm each family's reference code or demo uses by default."""


def resolve_algorithm(name: str, architecture: str) -> str:
    if name != "auto":
        return name
    try:
        return FAMILY_ALGORITHM[architecture]
    except KeyError:
        raise DgChatError(f"no default unmasking algorithm for '{architecture}' models; set --algorithm") from None


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
    """Every logit below the k-th largest of its row set to the dtype's lowest value."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the most likely tokens until their probabilities reach p (the token that crosses p
    included, at least one kept); the rest set to the dtype's lowest value."""
    if p >= 1:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop_sorted = torch.zeros_like(cumulative, dtype=torch.bool)
    drop_sorted[..., 1:] = cumulative[..., :-1] > p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, torch.finfo(logits.dtype).min)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Per-row entropy in nats (0 log 0 = 0)."""
    return torch.special.entr(probs).sum(dim=-1)


def categorical(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row from `probs` (non-negative, any scale)."""
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def gumbel_argmax(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """LLaDA's `add_gumbel_noise` + argmax: argmax of exp(l) / (-log u)^T with u ~ U(0, 1) per
    logit, in float64, taken in log space (l - T log(-log u)), which has the same argmax."""
    noise = torch.rand(logits.shape, dtype=torch.float64, generator=generator, device=logits.device)
    return (logits.double() - temperature * torch.log(-torch.log(noise))).argmax(dim=-1)


def top_positions(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores, ties to the earlier position."""
    return torch.sort(scores, descending=True, stable=True).indices[:k]


# -- one step -------------------------------------------------------------------------------

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
            rows = logits if len(masked) == n else logits.index_select(0, masked)
            rows[:, self.mask_id] = torch.finfo(rows.dtype).min  # [MASK] is never an answer
            chosen, tokens, predicted, row_entropy = self._step(rows, step, n, llada_counts)
            canvas[masked[chosen]] = tokens
            new_prediction = canvas.clone()
            new_prediction[masked] = predicted
            changed = new_prediction != prediction
            prediction = new_prediction
            yield CanvasStep(
                block=block, step=step, max_steps=self.steps,
                tokens=canvas.to(torch.int32).numpy(),
                argmax=prediction.to(torch.int32).numpy(),
                accepted=(canvas != self.mask_id).numpy(),
                changed=changed.numpy(),
                mean_entropy=float(row_entropy.mean()),
            )
            if len(chosen) == len(masked):  # nothing left to unmask
                break
        return BlockResult(canvas.clone(), step)

    def _step(self, rows: torch.Tensor, step: int, n_canvas: int,
              llada_counts: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """For the masked rows' logits [m, V] of 1-based `step`: which rows to unmask, their
        tokens, the prediction of every row and the entropy of every row's distribution."""
        if self.algorithm in LLADA_ALGORITHMS:
            return self._llada(rows, llada_counts[step - 1])
        if self.algorithm in DREAM_ALGORITHMS:
            return self._dream(rows, step - 1)
        if self.algorithm == "rnd1":
            return self._rnd1(rows, step, n_canvas)
        raise DgChatError(f"unknown unmasking algorithm {self.algorithm!r}")

    def _llada(self, rows: torch.Tensor, count: int):
        t = self.settings.temperature
        x0 = gumbel_argmax(rows, t, self.generator) if t > 0 else rows.argmax(dim=-1)
        if self.algorithm == "low_confidence":
            confidence = torch.softmax(rows.double(), dim=-1).gather(-1, x0[:, None]).squeeze(-1)
        else:
            confidence = torch.rand(len(rows), generator=self.generator, device=rows.device)
        chosen = top_positions(confidence, count)
        probs = torch.softmax(rows / t if t > 0 else rows, dim=-1)
        return chosen, x0[chosen], x0, entropy(probs)

    def _dream_distribution(self, rows: torch.Tensor) -> torch.Tensor:
        s = self.settings
        logits = rows / s.temperature if s.temperature > 0 else rows
        return torch.softmax(filter_top_k(filter_top_p(logits, s.top_p), s.top_k), dim=-1)

    def _dream(self, rows: torch.Tensor, step: int):
        s = self.settings
        probs = self._dream_distribution(rows)
        row_entropy = entropy(probs)
        if self.algorithm == "origin":
            move = torch.rand(len(rows), generator=self.generator, device=rows.device) \
                < dream_transfer_probability(step, self.timesteps)
            chosen = move.nonzero().squeeze(-1)
            x0 = probs.argmax(dim=-1)
            if s.temperature > 0 and chosen.numel():
                x0[chosen] = categorical(probs[chosen], self.generator)
            return chosen, x0[chosen], x0, row_entropy
        if s.temperature > 0:
            x0 = categorical(probs, self.generator)
            confidence = probs.gather(-1, x0[:, None]).squeeze(-1)
        else:
            confidence, x0 = probs.max(dim=-1)
        if self.algorithm == "topk_margin":
            top2 = probs.topk(2, dim=-1).values
            confidence = top2[:, 0] - top2[:, 1]
        elif self.algorithm == "entropy":
            confidence = -row_entropy
        count = dream_transfer_count(len(rows), step, self.timesteps)
        if count == 0:
            chosen = torch.zeros(0, dtype=torch.int64)
        elif s.alg_temp > 0:
            weights = torch.softmax(confidence / s.alg_temp, dim=-1)
            chosen = torch.multinomial(weights, count, replacement=False, generator=self.generator)
        else:
            chosen = top_positions(confidence, count)
        return chosen, x0[chosen], x0, row_entropy

    def _rnd1(self, rows: torch.Tensor, step: int, n_canvas: int):
        s = self.settings
        logits = rows / s.temperature if s.temperature > 0 else rows
        probs = torch.softmax(filter_top_p(filter_top_k(logits, s.top_k), s.top_p), dim=-1)
        x0 = categorical(probs, self.generator) if s.temperature > 0 else probs.argmax(dim=-1)
        row_entropy = entropy(probs)
        keep = rnd1_kept_masked(n_canvas, step, self.steps)
        chosen = top_positions(-row_entropy, max(0, len(rows) - keep))
        return chosen, x0[chosen], x0, row_entropy
