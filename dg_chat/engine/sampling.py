"""DiffusionGemma's entropy-bound sampler, exactly as transformers 5.23 runs it.

Per denoising step (`remaining` counts down N..1):
    processed = logits / T(remaining)                     linear temperature schedule
    candidate ~ Categorical(softmax(processed))           one draw per position
    accept the lowest-entropy positions while the sum of the entropies before each stays
        within the bound (the lowest-entropy position is always accepted)
    canvas    = candidate where accepted, fresh uniform noise everywhere else
    stop when the argmax canvas repeats (stability) and the mean entropy < confidence
The block's output is the argmax canvas of the last step executed.

With `reference_draws` (the default) the random draws happen in transformers' order and shapes
(randint (1, C) for the canvas, multinomial over (C, V), randint (1, C) for the renoise), so that
a generator seeded like `torch.manual_seed(N)` reproduces `generate()` token for token. Without,
candidates are drawn by inverse CDF at the accepted positions only: the same distribution, but
multinomial's C x V exponential draws are what a CPU step spends most of its time on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from typing import Protocol

import torch

from dg_chat.config import SamplerSettings
from dg_chat.engine.backends.base import Backend, SelfCondition
from dg_chat.engine.events import CanvasStep
from dg_chat.errors import DgChatError


class NonFiniteLogits(DgChatError):
    """A denoising step produced NaN or infinite values: the weights are damaged or mis-converted."""

    def __init__(self, path: object):
        super().__init__(f"the model produced NaN/inf values (damaged or mis-converted weights: {path})")


@dataclass(frozen=True, slots=True)
class DenoisingStep:
    """What one denoising step produced, on the backend's device (every block sampler's record)."""

    canvas: torch.Tensor
    """int64 [C]: the canvas the next step starts from (accepted draws, fresh noise elsewhere)."""
    argmax: torch.Tensor
    """int64 [C]: argmax of the processed logits; the block's output if it stops now."""
    accepted: torch.Tensor
    """bool [C]: positions whose draw the entropy bound kept."""
    entropy: torch.Tensor
    """float32 [C]: entropy of each position's tempered distribution, in nats."""
    self_cond: SelfCondition
    """What the next step is conditioned on."""


@dataclass(frozen=True, slots=True)
class BlockResult:
    tokens: torch.Tensor
    """int64 [C]: the finished canvas."""
    steps: int


BlockDenoiser = Generator[CanvasStep, None, BlockResult]


class BlockSampler(Protocol):
    def denoise_block(self, backend: Backend, block: int) -> BlockDenoiser:
        """Yield one CanvasStep per denoising step; return the finished canvas."""
        ...


def temperature(settings: SamplerSettings, remaining: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """T = t_min + (t_max - t_min) * remaining / N: t_max on the first step, ~t_min on the last.
    Computed in float32 from an int32 step, as transformers does: a temperature rounded
    differently by one ulp already changes which token a seeded draw picks."""
    step = torch.tensor(remaining, dtype=torch.int32, device=device)
    return settings.t_min + (settings.t_max - settings.t_min) * (step / settings.max_steps)


def categorical_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-row entropy in nats, computed as torch.distributions.Categorical(logits=...).entropy()
    does (normalise with logsumexp, clamp -inf), so acceptance decisions match bit for bit;
    in place where that changes nothing, because [canvas, vocab] temporaries are large."""
    log_p = logits - logits.logsumexp(dim=-1, keepdim=True)
    p = torch.softmax(log_p, dim=-1)
    return -log_p.clamp_(min=torch.finfo(log_p.dtype).min).mul_(p).sum(dim=-1)


def fast_entropy(logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """H = logsumexp(x) - sum(p * x), reusing the step's probabilities: two passes instead of
    five; equal to `categorical_entropy` within float32 rounding (not bit for bit)."""
    return (logits.logsumexp(dim=-1) - torch.linalg.vecdot(probs, logits)).clamp_(min=0)


def draw_accepted(probs: torch.Tensor, accepted: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Categorical draws by inverse CDF, only where a draw is kept (the accepted positions):
    the same distribution as multinomial over every position, at a fraction of the cost."""
    candidate = torch.zeros(probs.shape[0], dtype=torch.long, device=probs.device)
    rows = accepted.nonzero().squeeze(-1)
    cdf = probs[rows].cumsum(dim=-1)
    u = torch.rand((rows.shape[0], 1), generator=generator, device=probs.device) * cdf[:, -1:]
    candidate[rows] = torch.searchsorted(cdf, u).squeeze(-1).clamp_(max=probs.shape[-1] - 1)
    return candidate


def entropy_bound_accept(entropy: torch.Tensor, bound: float) -> torch.Tensor:
    """Accept positions in ascending entropy while the sum of the strictly lower entropies
    stays <= bound (Heng et al., arXiv 2505.24857): an upper bound on their joint mutual
    information, so the accepted tokens are nearly independent."""
    sorted_entropy, order = torch.sort(entropy, dim=-1)
    accepted_sorted = torch.cumsum(sorted_entropy, dim=-1) - sorted_entropy <= bound
    return torch.zeros_like(accepted_sorted).scatter(-1, order, accepted_sorted)


class EntropyBoundSampler:
    """Uniform-noise block denoising of DiffusionGemma (see the module docstring)."""

    def __init__(self, settings: SamplerSettings, *, vocab_size: int, canvas_length: int,
                 generator: torch.Generator):
        self.settings = settings
        self.vocab_size = vocab_size
        self.canvas_length = canvas_length
        self.generator = generator

    def _noise(self) -> torch.Tensor:
        return torch.randint(0, self.vocab_size, (1, self.canvas_length),
                             generator=self.generator, device=self.generator.device)[0]

    @torch.inference_mode()
    def _step(self, backend: Backend, canvas: torch.Tensor, self_cond: SelfCondition | None, remaining: int
              ) -> DenoisingStep:
        """One denoising step from `canvas`, `remaining` steps before the schedule's end."""
        s = self.settings
        logits = backend.denoise(canvas, self_cond)
        processed = logits.div_(temperature(s, remaining, logits.device))  # ours to modify
        probs = torch.softmax(processed, dim=-1, dtype=torch.float32)
        # the entropy before the draw (it takes no random numbers): NaN/inf logits make it
        # non-finite, and one scalar check per step stops the turn before multinomial fails
        entropy = categorical_entropy(processed) if s.reference_draws else fast_entropy(processed, probs)
        if not torch.isfinite(entropy.sum()):
            raise NonFiniteLogits(backend.path)
        if s.reference_draws:
            candidate = torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)
        argmax = processed.argmax(dim=-1)
        accepted = entropy_bound_accept(entropy, s.entropy_bound)
        if not s.reference_draws:
            candidate = draw_accepted(probs, accepted, self.generator)
        canvas = torch.where(accepted, candidate, self._noise())
        return DenoisingStep(canvas, argmax, accepted, entropy, SelfCondition(processed, probs))

    def denoise_block(self, backend: Backend, block: int) -> BlockDenoiser:
        s = self.settings
        canvas = self._noise()
        self_cond: SelfCondition | None = None
        history: deque[torch.Tensor] = deque(maxlen=s.stability)
        argmax = canvas
        step = 0
        for remaining in range(s.max_steps, 0, -1):
            step += 1
            record = self._step(backend, canvas, self_cond, remaining)
            canvas, self_cond = record.canvas, record.self_cond
            stable = len(history) == s.stability and all(torch.equal(h, record.argmax) for h in history)
            mean_entropy = record.entropy.mean()
            changed = record.argmax != argmax
            history.append(record.argmax)
            argmax = record.argmax
            yield CanvasStep(
                block=block, step=step, max_steps=s.max_steps,
                tokens=canvas.to("cpu", torch.int32).numpy(),
                argmax=argmax.to("cpu", torch.int32).numpy(),
                accepted=record.accepted.cpu().numpy(),
                changed=changed.cpu().numpy(),
                mean_entropy=float(mean_entropy),
            )
            if stable and bool(mean_entropy < s.confidence):  # compared in float32, as transformers does
                break
        return BlockResult(argmax, step)
