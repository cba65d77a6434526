"""The entropy-bound sampler: the spec's conformance checklist, and step-by-step parity with
transformers' own sampler classes on synthetic logits (same seed, same random calls)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch

from dg_chat.config import SamplerSettings
from dg_chat.engine.backends.base import SelfCondition
from dg_chat.engine.backends.torch_dg.functional import rms_norm, rope_inv_freq
from dg_chat.engine.events import BlockCommitted, CanvasStep, PromptEncoded, TurnFinished
from dg_chat.engine.generate import generate
from dg_chat.engine.sampling import (
    EntropyBoundSampler,
    categorical_entropy,
    entropy_bound_accept,
    temperature,
)

V, C = 50, 6


class ScriptedBackend:
    """Logits that depend on the canvas and the self-conditioning input, deterministically."""

    name, noise, mask_token_id, device, fused_sampling = "fake", "uniform", None, "cpu", False
    vocab_size, canvas_length, context_length = V, C, 10_000

    def __init__(self, sharpness: float = 4.0):
        g = torch.Generator().manual_seed(0)
        self.base = torch.randn(C, V, generator=g) * sharpness  # what each position "wants"
        self.table = torch.randn(V, V, generator=g)  # how neighbours sway it
        self.calls: list[tuple[list[int], bool]] = []
        self.committed: list[list[int]] = []
        self.cached_tokens = 0

    def prefill(self, token_ids):
        self.cached_tokens = len(token_ids)
        return len(token_ids)

    def denoise(self, canvas, self_cond):
        self.calls.append((canvas.tolist(), self_cond is not None))
        logits = self.base + self.table[canvas].roll(1, dims=0)
        if self_cond is not None:
            logits = logits + 3.0 * self_cond.probs
        return logits

    def commit(self, canvas):
        self.committed.append(canvas.tolist())
        self.cached_tokens += len(canvas)

    def close(self):
        pass


def run(backend, settings, end_ids=frozenset({49}), cancel=None):
    return list(generate(backend, [1, 2, 3], settings, end_ids=end_ids,
                         parse=lambda ids: ("", " ".join(map(str, ids))), cancel=cancel))


# -- conformance checklist (diffusiongemma-spec.md, last section) ----------------------------

def test_embed_scale_and_router_scalar():
    """The model's own scales at the 26B-A4B width: bf16(sqrt(2816)) = 53.0, and 2816^-0.5 = 0.018844."""
    from dg_chat.engine.backends.torch_dg.ops import ReferenceOps

    hp = SimpleNamespace(hidden=2816, eps=1e-6)
    bf16 = ReferenceOps(hp, SimpleNamespace(dtype=torch.bfloat16))
    assert bf16.embed_scale.dtype == torch.bfloat16 and bf16.embed_scale.item() == 53.0
    ops = ReferenceOps(hp, SimpleNamespace(dtype=torch.float32, get=lambda name: torch.ones(2816)))
    h = torch.randn(3, 2816, generator=torch.Generator().manual_seed(0))
    _, _, _, router_in = ops.post_attention(torch.zeros(3, 2816), h, 0)
    assert (router_in / rms_norm(h, None, 1e-6)).sub(0.018844).abs().max() < 1e-6


def test_full_layer_proportional_rope_frequencies():
    factors = torch.tensor([1.0] * 64 + [1e30] * 192)
    inv_freq = rope_inv_freq(512, 1e6, factors)
    assert inv_freq.shape == (256,)
    assert inv_freq[0] == 1.0
    assert inv_freq[1].item() == pytest.approx(1e6 ** (-2 / 512), rel=1e-6)
    assert inv_freq[64:].abs().max() < 1e-30  # unrotated pairs: cos 1, sin 0 at any position


def test_temperature_schedule():
    s = SamplerSettings()
    assert temperature(s, 48) == pytest.approx(0.8)
    assert temperature(s, 1) == pytest.approx(0.4083, abs=1e-4)


def test_entropy_bound_example_from_the_spec():
    entropy = torch.tensor([0.20, 0.01, 0.05, 0.03, 0.04])  # sorted: .01 .03 .04 .05 .20
    assert entropy_bound_accept(entropy, 0.1).tolist() == [False, True, True, True, True]


def test_entropy_bound_zero_accepts_exactly_the_lowest_entropy_position():
    entropy = torch.tensor([0.30, 0.02, 0.20, 0.01, 0.50])
    assert entropy_bound_accept(entropy, 0.0).tolist() == [False, False, False, True, False]


def test_entropy_bound_at_an_exact_tie_accepts_it():
    # sum of the strictly lower entropies: 0, 0.25, 0.5 -- the last one equals the bound, and <= accepts it
    assert entropy_bound_accept(torch.tensor([0.25, 0.25, 1.0]), 0.5).tolist() == [True, True, True]
    assert entropy_bound_accept(torch.tensor([0.25, 0.25, 1.0]), 0.4999).tolist() == [True, True, False]


def transformers_accepts(logits: torch.Tensor, bound: float) -> list[bool]:
    gen = pytest.importorskip("transformers.models.diffusion_gemma.generation_diffusion_gemma")
    sampler = gen.EntropyBoundSampler(gen.EntropyBoundSamplerConfig(entropy_bound=0.1), logits.shape[0],
                                      logits.shape[1], 12)
    sampler.entropy_bound = bound  # its config refuses 0, its comparison does not
    canvas = torch.zeros(1, logits.shape[0], dtype=torch.long)
    sampler.accept_canvas(canvas, canvas, logits[None], 12)
    return sampler.accepted_token_mask[0].tolist()


def test_acceptance_at_bound_zero_and_at_exact_ties_compares_like_transformers():
    flat, sharp = torch.zeros(V), torch.arange(V, dtype=torch.float32) / 4
    logits = torch.stack([flat, sharp, sharp, flat * 2, sharp * 2])  # exact ties: rows 1 and 2, rows 0 and 3
    entropy = categorical_entropy(logits)
    ordered = entropy.sort().values
    tie_bounds = (torch.cumsum(ordered, 0) - ordered).tolist()  # each position's own threshold, exactly
    for bound in [0.0, *tie_bounds]:
        assert entropy_bound_accept(entropy, bound).tolist() == transformers_accepts(logits, bound), bound
    assert sum(entropy_bound_accept(entropy, 0.0).tolist()) == 1


def test_lowest_entropy_position_is_always_accepted():
    entropy = torch.tensor([3.0, 2.5, 4.0])
    assert entropy_bound_accept(entropy, 0.1).tolist() == [False, True, False]


def test_entropy_matches_torch_categorical():
    logits = torch.randn(7, 30) * 5
    logits[0, 3] = float("-inf")
    expected = torch.distributions.Categorical(logits=logits).entropy()
    assert torch.equal(categorical_entropy(logits), expected)


def test_first_step_of_every_canvas_has_no_self_conditioning():
    backend = ScriptedBackend()
    run(backend, SamplerSettings(seed=1, max_steps=3, max_canvases=2), end_ids=frozenset())
    assert [has_sc for _, has_sc in backend.calls] == [False, True, True, False, True, True]


@pytest.mark.parametrize("stability", [0, 1, 2, 3])
def test_a_confident_stable_canvas_stops_after_stability_plus_one_steps(stability):
    backend = ScriptedBackend(sharpness=200.0)  # near-zero entropy and the same argmax from the first step
    events = run(backend, SamplerSettings(seed=1, max_steps=10, max_canvases=1, confidence=10.0, stability=stability))
    assert events[-1].stats.steps == [stability + 1]


def test_stop_needs_two_steps_even_when_confident():
    backend = ScriptedBackend(sharpness=200.0)  # near-zero entropy from the first step
    events = run(backend, SamplerSettings(seed=1, max_steps=10, max_canvases=1, confidence=10.0))
    steps = [e for e in events if isinstance(e, CanvasStep)]
    assert steps[0].mean_entropy < 10.0
    assert len(steps) >= 2 and events[-1].stats.steps == [len(steps)]


def test_output_is_the_argmax_of_the_last_step_and_is_committed_before_the_next_canvas():
    backend = ScriptedBackend()
    events = run(backend, SamplerSettings(seed=3, max_steps=4, max_canvases=3), end_ids=frozenset())
    blocks = [e for e in events if isinstance(e, BlockCommitted)]
    last_steps = [[e for e in events if isinstance(e, CanvasStep) and e.block == b][-1] for b in range(3)]
    for block, last in zip(blocks, last_steps, strict=True):
        assert block.tokens.tolist() == last.argmax.tolist()
    assert backend.committed == [blocks[0].tokens.tolist(), blocks[1].tokens.tolist()]


def test_event_stream_shape_and_eos_cut():
    backend = ScriptedBackend()
    events = run(backend, SamplerSettings(seed=5, max_steps=3, max_canvases=8), end_ids=frozenset(range(20)))
    assert isinstance(events[0], PromptEncoded) and isinstance(events[-1], TurnFinished)
    block = next(e for e in events if isinstance(e, BlockCommitted))
    assert block.final and block.tokens[-1] < 20 and all(t >= 20 for t in block.tokens[:-1])
    assert events[-1].token_ids == block.tokens.tolist()
    step = next(e for e in events if isinstance(e, CanvasStep))
    assert step.tokens.shape == step.argmax.shape == step.accepted.shape == step.changed.shape == (C,)


def test_cancel_between_steps_keeps_the_committed_blocks_and_the_current_argmax():
    backend = ScriptedBackend()
    cancel = threading.Event()
    events = []
    for event in generate(backend, [1], SamplerSettings(seed=2, max_steps=5, max_canvases=3), end_ids=frozenset(),
                          parse=lambda ids: ("", " ".join(map(str, ids))), cancel=cancel):
        events.append(event)
        if isinstance(event, CanvasStep) and event.block == 1 and event.step == 2:
            cancel.set()
    last_step = [e for e in events if isinstance(e, CanvasStep)][-1]
    first, partial = [e for e in events if isinstance(e, BlockCommitted)]
    finished = events[-1]
    assert partial.final and partial.steps == 2 and partial.tokens.tolist() == last_step.argmax.tolist()
    assert finished.stopped and finished.token_ids == first.tokens.tolist() + last_step.argmax.tolist()
    assert finished.answer == partial.answer and finished.stats.steps == [5, 2]
    assert [e.step for e in events if isinstance(e, CanvasStep) and e.block == 1] == [1, 2]
    assert len(backend.committed) == 1  # the partial block never enters the context


def test_cancel_keeps_the_current_argmax_up_to_its_first_end_token():
    settings = SamplerSettings(seed=2, max_steps=5, max_canvases=1)
    first_step = next(e for e in run(ScriptedBackend(), settings) if isinstance(e, CanvasStep))
    end = int(first_step.argmax[2])
    cancel = threading.Event()
    events = []
    for event in generate(ScriptedBackend(), [1, 2, 3], settings, end_ids=frozenset({end}),
                          parse=lambda ids: ("", " ".join(map(str, ids))), cancel=cancel):
        events.append(event)
        if isinstance(event, CanvasStep):
            cancel.set()
    argmax = first_step.argmax.tolist()
    assert events[-1].stopped and events[-1].token_ids == argmax[:argmax.index(end) + 1]


@pytest.mark.parametrize("max_canvases, context_full", [(2, False), (3, True), (9, True)])
def test_an_answer_cut_by_a_full_context_says_so(max_canvases, context_full):
    backend = ScriptedBackend()
    backend.context_length = 3 + 3 * C  # the 3-token prompt leaves room for 3 canvases
    stats = run(backend, SamplerSettings(seed=1, max_steps=2, max_canvases=max_canvases), end_ids=frozenset())[-1].stats
    assert stats.truncated and stats.blocks == min(max_canvases, 3) and stats.context_full is context_full


def test_seeded_turns_are_reproducible():
    a = run(ScriptedBackend(), SamplerSettings(seed=9, max_steps=5, max_canvases=2))[-1]
    b = run(ScriptedBackend(), SamplerSettings(seed=9, max_steps=5, max_canvases=2))[-1]
    assert a.token_ids == b.token_ids and a.stats.seed == 9


# -- parity with transformers' sampler classes -------------------------------------------------

@pytest.mark.parametrize("stability, confidence", [(0, 1.0), (1, 1.0), (2, 1.0), (2, 0.5)])
def test_steps_match_transformers_sampler_classes(stability, confidence):
    gen = pytest.importorskip("transformers.models.diffusion_gemma.generation_diffusion_gemma")
    settings = SamplerSettings(seed=123, max_steps=12, confidence=confidence, stability=stability)
    ours = EntropyBoundSampler(settings, vocab_size=V, canvas_length=C,
                               generator=torch.Generator().manual_seed(123))
    backend = ScriptedBackend(sharpness=8.0)
    denoiser = ours.denoise_block(backend, 0)
    our_steps = []
    try:
        while True:
            our_steps.append(next(denoiser))
    except StopIteration as done:
        our_final = done.value

    torch.manual_seed(123)  # transformers draws from the global generator
    sampler = gen.EntropyBoundSampler(gen.EntropyBoundSamplerConfig(entropy_bound=0.1), C, V, 12)
    schedule = gen.LinearTemperatureScheduleLogitsProcessor(0.4, 0.8, 12)
    stopping = gen.StableAndConfidentStoppingCriteria(stability, confidence)
    canvas = sampler.initialize_canvas(1, torch.device("cpu"))
    ref = ScriptedBackend(sharpness=8.0)
    sc = None
    ref_steps = []
    for cur_step in range(12, 0, -1):
        logits = ref.denoise(canvas[0], sc)[None]
        processed = schedule(None, logits, cur_step=cur_step)
        probs = torch.softmax(processed, dim=-1, dtype=torch.float32)
        drawn = torch.multinomial(probs.view(-1, V), num_samples=1).view(1, C)
        argmax = processed.argmax(-1)
        accepted = sampler.accept_canvas(canvas, drawn, processed, cur_step)
        canvas = sampler.renoise_canvas(accepted, cur_step)
        ref_steps.append((canvas[0].tolist(), argmax[0].tolist(), sampler.accepted_token_mask[0].tolist()))
        sc = SelfCondition(processed[0], probs[0])
        if stopping(argmax, processed).all():
            break
    assert [(s.tokens.tolist(), s.argmax.tolist(), s.accepted.tolist()) for s in our_steps] == ref_steps
    assert our_final.tokens.tolist() == ref_steps[-1][1] and our_final.steps == len(ref_steps) < 12
    assert len(ref_steps) > stability  # the rule needed `stability` earlier steps to compare with


def test_fast_draws_sample_the_same_distribution_only_where_kept():
    from dg_chat.engine.sampling import draw_accepted

    probs = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    accepted = torch.tensor([True, True, False])
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([draw_accepted(probs, accepted, generator) for _ in range(20_000)])
    assert (draws[:, 0] == 2).all()
    assert (draws[:, 2] == 0).all()  # not accepted: no draw made
    frequencies = torch.bincount(draws[:, 1], minlength=4) / draws.shape[0]
    assert torch.allclose(frequencies, probs[1], atol=0.015)


def test_fast_draws_are_reproducible_for_a_seed():
    settings = SamplerSettings(seed=4, max_steps=5, max_canvases=2, reference_draws=False)
    a, b = run(ScriptedBackend(), settings)[-1], run(ScriptedBackend(), settings)[-1]
    assert a.token_ids == b.token_ids


def test_fast_entropy_agrees_with_the_reference_formula():
    from dg_chat.engine.sampling import fast_entropy

    logits = torch.randn(16, 300) * torch.linspace(0.1, 40, 16)[:, None]
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    torch.testing.assert_close(fast_entropy(logits, probs), categorical_entropy(logits), atol=2e-5, rtol=1e-5)
