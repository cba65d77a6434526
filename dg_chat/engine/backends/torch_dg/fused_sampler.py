"""The entropy-bound sampler with every step on the device (gpu-engine.md §6.5, §6.7).

The same algorithm as `EntropyBoundSampler` (engine/sampling.py), with the [C, V] work fused into
two Triton launches (kernels/sampler.py) and the rest of a step (entropy-bound acceptance,
renoise, the stop rule) kept in device tensors, so a step never waits for the host. The host
reads back one small packed tensor per step: the live view and the stop decision.

It samples the same distributions but not the same random numbers as transformers: draws are
Gumbel-max with Philox keyed by the generator's seed, so `--seed N` reproduces a fused run, while
matching transformers' tokens stays the reference sampler's job (`reference_draws`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dg_chat.config import SamplerSettings
from dg_chat.engine.backends.base import Backend, SelfCondition
from dg_chat.engine.backends.torch_dg.kernels.sampler import row_statistics, uniform_canvas
from dg_chat.engine.events import CanvasStep
from dg_chat.engine.sampling import (
    BlockDenoiser,
    BlockResult,
    DenoisingStep,
    NonFiniteLogits,
    entropy_bound_accept,
    temperature,
)


class StopRule:
    """transformers' StableAndConfidentStoppingCriteria as device state: stop when the argmax
    canvas equals each of the previous `stability` argmax canvases of the block and the mean
    entropy is below `confidence` (compared in float32).

    Equal to the last k canvases means a run of k repeats, so one previous canvas and a repeat
    count replace the reference's history of k canvases."""

    def __init__(self, settings: SamplerSettings, canvas_length: int, device: torch.device):
        self.stability = settings.stability
        self.confidence = settings.confidence
        self.previous = torch.zeros(canvas_length, dtype=torch.int64, device=device)
        """int64 [C]: the previous step's argmax (a block's first canvas before its first step)."""
        self.repeats = torch.zeros((), dtype=torch.int64, device=device)
        """int64 []: steps in a row the argmax canvas has repeated (-1 at a block's start)."""

    def reset(self, canvas: torch.Tensor) -> None:
        """Start a block whose first canvas is `canvas` (int64 [C])."""
        self.previous.copy_(canvas)
        self.repeats.fill_(-1)

    def update(self, argmax: torch.Tensor, entropy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Record a step's argmax (int64 [C]) and entropies (float32 [C]): (changed bool [C],
        mean entropy float32 [], stop bool [])."""
        changed = argmax != self.previous
        self.repeats.copy_(torch.where(changed.any(), 0, self.repeats + 1))  # -1 + 1: a first canvas is no repeat
        self.previous.copy_(argmax)
        mean_entropy = entropy.mean()
        stop = (self.repeats >= self.stability) & (mean_entropy < self.confidence)
        return changed, mean_entropy, stop


def pack_step(record: DenoisingStep, changed: torch.Tensor, mean_entropy: torch.Tensor, stop: torch.Tensor
              ) -> torch.Tensor:
    """Everything the host needs from a step in one int32 [3C + 2] tensor (one device->host copy):
    canvas, argmax, accepted | changed << 1, the float32 bits of the mean entropy, the stop flag."""
    flags = record.accepted.to(torch.int32) | (changed.to(torch.int32) << 1)
    return torch.cat([record.canvas.to(torch.int32), record.argmax.to(torch.int32), flags,
                      mean_entropy.reshape(1).view(torch.int32), stop.to(torch.int32).reshape(1)])


@dataclass(frozen=True, slots=True)
class HostStep:
    """`pack_step`'s tensor on the host."""

    tokens: np.ndarray
    """int32 [C]."""
    argmax: np.ndarray
    """int32 [C]."""
    accepted: np.ndarray
    """bool [C]."""
    changed: np.ndarray
    """bool [C]."""
    mean_entropy: float
    """nats."""
    stop: bool

    @classmethod
    def unpack(cls, packed: np.ndarray) -> HostStep:
        c = (packed.shape[0] - 2) // 3
        flags = packed[2 * c:3 * c]
        return cls(tokens=packed[:c], argmax=packed[c:2 * c], accepted=(flags & 1).astype(bool),
                   changed=(flags & 2).astype(bool), mean_entropy=float(packed[3 * c:3 * c + 1].view(np.float32)[0]),
                   stop=bool(packed[3 * c + 1]))


def _int64(seed: int) -> int:
    """A uint64 seed (torch.Generator.initial_seed) as the int64 with the same bits."""
    return seed - 2**64 if seed >= 2**63 else seed


class FusedEntropyBoundSampler:
    """`EntropyBoundSampler`'s block denoising on the fast path: the same interface, steps and
    stop rule; two Triton launches and one device->host copy per denoising step."""

    def __init__(self, settings: SamplerSettings, *, vocab_size: int, canvas_length: int,
                 generator: torch.Generator):
        device = generator.device
        self.settings = settings
        self.vocab_size = vocab_size
        self.canvas_length = canvas_length
        # persistent device inputs of a step, updated in place (a captured graph keeps their addresses)
        self.seed = torch.tensor([_int64(generator.initial_seed())], dtype=torch.int64, device=device)
        self.counter = torch.zeros(1, dtype=torch.int64, device=device)
        """int64 [1]: denoising steps run so far; with the seed, it keys the step's random numbers."""
        self.temperature = torch.zeros(1, dtype=torch.float32, device=device)
        self.schedule = torch.stack([temperature(settings, remaining)
                                     for remaining in range(settings.max_steps, 0, -1)]).to(device)
        """float32 [max_steps]: the reference's temperature of step i + 1, computed the same way."""
        self.stop_rule = StopRule(settings, canvas_length, device)

    @torch.inference_mode()
    def _step(self, backend: Backend, canvas: torch.Tensor, self_cond: SelfCondition | None, step: int
              ) -> DenoisingStep:
        """Denoising step `step` (1-based) from `canvas`, with no host synchronisation."""
        self.temperature.copy_(self.schedule[step - 1])
        logits = backend.denoise(canvas, self_cond).contiguous()
        stats = row_statistics(logits, self.temperature, self.seed, self.counter)  # logits become processed
        accepted = entropy_bound_accept(stats.entropy, self.settings.entropy_bound)
        canvas = torch.where(accepted, stats.draw, stats.noise)
        self.counter.add_(1)
        self_cond = SelfCondition(logits, lse=stats.lse, candidates=stats.candidates)
        return DenoisingStep(canvas, stats.argmax, accepted, stats.entropy, self_cond)

    @torch.inference_mode()
    def _summary(self, record: DenoisingStep) -> torch.Tensor:
        """The step's packed host view (`pack_step`), the stop rule updated on the device."""
        return pack_step(record, *self.stop_rule.update(record.argmax, record.entropy))

    def denoise_block(self, backend: Backend, block: int) -> BlockDenoiser:
        """Yield one CanvasStep per denoising step; return the block's argmax canvas."""
        s = self.settings
        canvas = argmax = uniform_canvas(self.canvas_length, self.vocab_size, self.seed, self.counter)
        self.stop_rule.reset(canvas)
        self_cond: SelfCondition | None = None
        step = 0
        for step in range(1, s.max_steps + 1):
            record = self._step(backend, canvas, self_cond, step)
            view = HostStep.unpack(self._summary(record).cpu().numpy())  # the step's one device->host copy
            if not math.isfinite(view.mean_entropy):  # NaN/inf logits make every statistic non-finite
                raise NonFiniteLogits(backend.path)
            canvas, argmax, self_cond = record.canvas, record.argmax, record.self_cond
            yield CanvasStep(block=block, step=step, max_steps=s.max_steps, tokens=view.tokens, argmax=view.argmax,
                             accepted=view.accepted, changed=view.changed, mean_entropy=view.mean_entropy)
            if view.stop:
                break
        return BlockResult(argmax, step)
