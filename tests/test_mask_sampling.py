"""Mask-token samplers against the published reference algorithms, on synthetic logits.

The `reference_*` functions restate the reference generators (ML-GSAI/LLaDA generate.py, Dream's
generation_utils.py `_sample`/`sample_tokens`, RadicalNumerics/RND1 rnd/sampling.py) in a few
lines each, for one sequence, over the same deterministic toy model as our sampler sees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dg_chat.config import SamplerSettings
from dg_chat.engine import mask_sampling as ms
from dg_chat.engine.events import BlockCommitted, CanvasStep, PromptEncoded, TurnFinished
from dg_chat.engine.generate import generate

VOCAB = 40
MASK = VOCAB - 1


class ToyModel:
    """Deterministic bidirectional 'model': every position's logits depend on its own token, its
    position and (through a mean) on every other token of the sequence."""

    def __init__(self, seed: int = 0, scale: float = 3.0):
        g = torch.Generator().manual_seed(seed)
        self.own = torch.randn(VOCAB, VOCAB, generator=g) * scale
        self.mix = torch.randn(VOCAB, VOCAB, generator=g)
        self.pos = torch.randn(512, VOCAB, generator=g)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.own[tokens] + self.mix[tokens].mean(0) + self.pos[: len(tokens)]
        logits[:, MASK] = -1e9  # like a trained model: never predicts [MASK]
        return logits


class ToyBackend:
    """The Backend protocol over ToyModel, decoding [context | canvas] like LlamaBackend."""

    name, noise, device, vocab_size, mask_token_id = "toy", "mask", "cpu", VOCAB, MASK
    fused_sampling = False

    def __init__(self, architecture: str, *, canvas_length: int = 8, context_length: int = 256,
                 shift: bool = False, model: ToyModel | None = None):
        self.architecture, self.canvas_length, self.context_length = architecture, canvas_length, context_length
        self.path = Path("toy.gguf")
        self.shift = shift
        self.model = model or ToyModel()
        self.context: list[int] = []
        self.calls: list[int] = []

    @property
    def cached_tokens(self) -> int:
        return len(self.context)

    def prefill(self, ids):
        self.context = list(ids)
        return len(ids)

    def denoise(self, canvas, self_cond):
        full = torch.cat([torch.tensor(self.context, dtype=torch.int64), canvas])
        self.calls.append(len(full))
        logits = self.model(full)
        if self.shift:
            logits = torch.cat([logits[:1], logits[:-1]])
        return logits[len(self.context):]

    def commit(self, canvas):
        self.context += canvas.tolist()

    def close(self):
        pass


def run(backend, prompt, **settings):
    settings.setdefault("seed", 0)
    s = SamplerSettings(**settings)
    return list(generate(backend, prompt, s, end_ids=frozenset(), parse=lambda ids: ("", "")))


def generated(events) -> list[int]:
    return events[-1].token_ids


# -- reference restatements -----------------------------------------------------------------

def reference_llada(model, prompt, *, steps, gen_length, block_length):
    """LLaDA generate() at temperature 0, low_confidence remasking, no CFG."""
    x = torch.tensor(prompt + [MASK] * gen_length)
    p = len(prompt)
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    for b in range(num_blocks):
        block = slice(p + b * block_length, p + (b + 1) * block_length)
        n_mask = int((x[block] == MASK).sum())
        counts = [n_mask // steps_per_block + (i < n_mask % steps_per_block) for i in range(steps_per_block)]
        for i in range(steps_per_block):
            mask_index = x == MASK
            logits = model(x)
            x0 = logits.argmax(-1)
            x0_p = torch.softmax(logits.double(), -1).gather(-1, x0[:, None]).squeeze(-1)
            x0_p[block.stop:] = -np.inf
            confidence = torch.where(mask_index, x0_p, torch.tensor(-np.inf, dtype=torch.float64))
            select = torch.topk(confidence, counts[i]).indices
            x[select] = x0[select]
    return x[p:].tolist()


def reference_dream(model, prompt, *, steps, gen_length, alg, eps=1e-3):
    """Dream _sample() at temperature 0 (no top-p/top-k, alg_temp 0), with Dream's logit shift."""
    x = torch.tensor(prompt + [MASK] * gen_length)
    timesteps = torch.linspace(1, eps, steps + 1)
    for i in range(steps):
        mask_index = x == MASK
        logits = model(x)
        logits = torch.cat([logits[:1], logits[:-1]])
        probs = torch.softmax(logits[mask_index], -1)
        confidence, x0 = probs.max(-1)
        if alg == "topk_margin":
            top = torch.sort(probs, descending=True).values
            confidence = top[:, 0] - top[:, 1]
        elif alg == "entropy":
            confidence = (probs * torch.log(probs + 1e-10)).sum(-1)
        t, s = timesteps[i], timesteps[i + 1]
        num_mask = mask_index.sum() / 1
        k = int(num_mask * (1 - s / t)) if i < steps - 1 else int(num_mask)
        full = torch.full(x.shape, -torch.inf)
        full[mask_index] = confidence
        if k > 0:
            select = torch.topk(full, k).indices
            candidates = torch.full_like(x, MASK)
            candidates[mask_index] = x0
            x[select] = candidates[select]
    return x[len(prompt):].tolist()


def reference_rnd1(model, prompt, *, steps, gen_length):
    """RND1 diffusion_sample() with greedy=True, temperature 1 (what our temperature 0 means)."""
    x = torch.tensor(prompt + [MASK] * gen_length)
    maskable = x == MASK
    total = maskable.sum().reshape(1, 1)

    def scores(tokens):
        logp = torch.log_softmax(model(tokens), -1)
        pred_next, ent_next = logp.argmax(-1), -(logp.exp() * logp).sum(-1)
        pred, ent = tokens.clone(), torch.zeros_like(ent_next)
        pred[1:], ent[1:] = pred_next[:-1], ent_next[:-1]
        return pred, ent

    pred, ent = scores(x)
    for step in range(steps - 1, 0, -1):
        keep_count = int((total * (step / steps)).long())
        keep = torch.zeros_like(maskable)
        if keep_count:
            keep[torch.topk(ent.masked_fill(~maskable, -torch.finfo(ent.dtype).max), keep_count).indices] = True
        unmask = maskable & ~keep
        x[unmask] = pred[unmask]
        maskable &= ~unmask
        if maskable.any():
            pred, ent = scores(x)
    x[maskable] = pred[maskable]
    return x[len(prompt):].tolist()


PROMPT = [3, 14, 15, 9, 2, 6]


# -- whole generations against the references ------------------------------------------------

@pytest.mark.parametrize("steps", [8, 5, 12])
def test_llada_semi_autoregressive_blocks_match_reference(steps):
    backend = ToyBackend("llada", canvas_length=8)
    events = run(backend, PROMPT, max_steps=steps, max_canvases=3, temperature=0.0)
    expected = reference_llada(backend.model, PROMPT, steps=3 * steps, gen_length=24, block_length=8)
    assert generated(events) == expected
    # the whole generation window is present on every step, as in the reference
    assert backend.calls[0] == len(PROMPT) + 24


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
def test_dream_algorithms_match_reference(alg):
    backend = ToyBackend("dream", canvas_length=16, shift=True)
    events = run(backend, PROMPT, max_steps=6, max_canvases=1, algorithm=alg)
    assert generated(events) == reference_dream(backend.model, PROMPT, steps=6, gen_length=16, alg=alg)


def test_rnd1_matches_reference():
    backend = ToyBackend("rnd1", canvas_length=16, shift=True)
    events = run(backend, PROMPT, max_steps=5, max_canvases=1)
    assert generated(events) == reference_rnd1(backend.model, PROMPT, steps=5, gen_length=16)


# -- schedules ------------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "steps"), [(32, 32), (32, 5), (7, 3), (3, 8)])
def test_llada_transfer_counts(n, steps):
    counts = ms.llada_transfer_counts(n, steps)
    assert sum(counts) == n and len(counts) == steps
    assert counts == sorted(counts, reverse=True) and max(counts) - min(counts) <= 1


def test_dream_schedule_is_linspace_to_eps_and_ends_with_everything():
    ts = ms.dream_timesteps(10, 1e-3)
    assert torch.equal(ts, torch.linspace(1, 1e-3, 11))
    n = 100
    counts = [ms.dream_transfer_count(n, i, ts) for i in range(10)]
    assert counts[:-1] == [int(torch.tensor(float(n)) * (1 - ts[i + 1] / ts[i])) for i in range(9)]
    assert counts[-1] == n
    assert ms.dream_transfer_probability(9, ts) == 1.0
    assert ms.dream_transfer_probability(0, ts) == pytest.approx(float(1 - ts[1] / ts[0]))


def test_rnd1_keeps_the_reference_share_masked():
    for total, steps in [(256, 48), (96, 48), (16, 5)]:
        for step in range(1, steps + 1):
            expected = int((torch.tensor([[total]]) * ((steps - step) / steps)).long())
            assert ms.rnd1_kept_masked(total, step, steps) == expected
        assert ms.rnd1_kept_masked(total, steps, steps) == 0


def test_steps_per_block_come_from_the_settings_not_the_prompt():
    """llama.cpp's example derives steps per block from a length that includes the prompt."""
    per_prompt = []
    for prompt in ([1, 2], list(range(1, 38)) * 3):
        backend = ToyBackend("llada", canvas_length=8)
        events = run(backend, prompt, max_steps=4, max_canvases=2)
        steps = [e for e in events if isinstance(e, CanvasStep)]
        per_prompt.append([(e.block, e.step, int(e.accepted.sum())) for e in steps])
    assert per_prompt[0] == per_prompt[1]
    # 4 steps per 8-token block, 2 tokens each
    assert per_prompt[0] == [(b, s, 2 * s) for b in (0, 1) for s in (1, 2, 3, 4)]


# -- the behaviours llama.cpp's diffusion example gets wrong ---------------------------------

def one_step(algorithm: str, rows: torch.Tensor, *, temperature: float = 0.0, seed: int = 0,
             **settings) -> ms.UnmaskingStep:
    """Run one step of `algorithm` on synthetic logits `rows` [m, V] of a canvas of len(rows)."""
    backend = ToyBackend("dream", canvas_length=len(rows))
    s = SamplerSettings(max_steps=settings.pop("max_steps", 4), algorithm=algorithm, temperature=temperature,
                        **settings)
    sampler = ms.MaskSampler(s, backend=backend, generator=torch.Generator().manual_seed(seed))
    counts = ms.llada_transfer_counts(len(rows), s.max_steps)
    return sampler._step(rows.clone(), 1, len(rows), counts)


def peaked_and_flat(peaked: list[int], n: int = 6) -> torch.Tensor:
    rows = torch.zeros(n, VOCAB)
    rows[:, 5] = 0.5
    for i in peaked:
        rows[i, 7] = 12.0
    return rows


@pytest.mark.parametrize("algorithm", ["entropy", "rnd1"])
def test_lowest_entropy_is_unmasked_first(algorithm):
    rows = peaked_and_flat([4])
    decided = one_step(algorithm, rows, max_steps=2)
    assert decided.entropy[4] < decided.entropy[0]
    assert decided.chosen.tolist()[:1] == [4] and decided.tokens.tolist()[:1] == [7]


@pytest.mark.parametrize("algorithm", ["low_confidence", "maskgit_plus", "topk_margin", "entropy", "origin", "rnd1"])
def test_temperature_zero_is_greedy_and_seed_independent(algorithm):
    rows = torch.randn(8, VOCAB, generator=torch.Generator().manual_seed(3)) * 2
    rows[:, MASK] = -1e9
    first = one_step(algorithm, rows, seed=1)
    second = one_step(algorithm, rows, seed=2)
    assert torch.equal(first.prediction, rows.argmax(-1))
    if algorithm != "origin":  # origin draws which positions move, even when greedy
        assert torch.equal(first.chosen, second.chosen)


def test_llada_sampling_covers_every_row():
    rows = torch.zeros(32, VOCAB)  # every token equally likely on every row
    predicted = one_step("low_confidence", rows, temperature=1.0).prediction
    assert len(set(predicted.tolist())) > 10  # each row got its own draw, not just row 0


def test_llada_samples_the_distribution_of_its_gumbel_max():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    temperature = 0.7
    g = torch.Generator().manual_seed(0)
    noise = torch.rand((20000, 5), dtype=torch.float64, generator=g)
    gumbel = (logits.double().exp() / (-torch.log(noise)) ** temperature).argmax(-1)  # LLaDA's add_gumbel_noise
    rows = torch.full((20000, VOCAB), -1e9)
    rows[:, :5] = logits
    backend = ToyBackend("llada", canvas_length=20000)
    s = SamplerSettings(max_steps=2, temperature=temperature)
    sampler = ms.MaskSampler(s, backend=backend, generator=g)
    ours = sampler._step(rows, 1, 20000, ms.llada_transfer_counts(20000, 2)).prediction
    expected = torch.softmax(logits / temperature, -1)
    for draws in (gumbel, ours):
        assert torch.allclose(torch.bincount(draws, minlength=5)[:5] / 20000., expected, atol=0.015)


@pytest.mark.parametrize("algorithm", ["maskgit_plus", "topk_margin", "entropy"])
def test_temperature_sampling_covers_every_row(algorithm):
    rows = torch.zeros(32, VOCAB)
    decided = one_step(algorithm, rows, temperature=1.0, max_steps=1)  # the last step unmasks all
    # every committed row was drawn, not just row 0
    assert len(decided.chosen) == 32 and len(set(decided.tokens.tolist())) > 10


def test_alg_temp_draws_positions_without_replacement():
    rows = peaked_and_flat([0], n=16)  # one position dominates the confidence
    for seed in range(20):
        chosen = one_step("maskgit_plus", rows, seed=seed, alg_temp=0.01, max_steps=2, eps=0.0).chosen
        assert len(chosen) == 8 and len(set(chosen.tolist())) == 8


def test_alg_temp_prefers_confident_positions():
    rows = peaked_and_flat([2, 9], n=16)
    hits = 0
    for seed in range(20):
        chosen = one_step("maskgit_plus", rows, seed=seed, alg_temp=0.05, max_steps=8, eps=0.0).chosen
        hits += set(chosen.tolist()) == {2, 9}
    assert hits == 20


def test_margin_is_between_the_two_most_likely_tokens():
    rows = torch.full((2, VOCAB), -5.0)
    rows[0, [20, 21]] = torch.tensor([3.0, 2.9])  # confident top-1, but a close second: small margin
    rows[1, 30] = 2.0                             # less confident top-1, far from the rest: big margin
    rows[:, 0] = rows[:, 1] = -5.0                # tokens 0 and 1 say nothing (llama.cpp compares them)
    chosen = one_step("topk_margin", rows, max_steps=2, eps=0.0).chosen
    assert chosen.tolist() == [1]
    confidence_of = torch.softmax(rows, -1).topk(2).values
    assert confidence_of[1, 0] - confidence_of[1, 1] > confidence_of[0, 0] - confidence_of[0, 1]


# -- filters --------------------------------------------------------------------------------

@pytest.mark.parametrize("vocab", [VOCAB, 5000])
def test_top_k_and_top_p_filters_match_dream(vocab):
    logits = torch.randn(5, vocab, generator=torch.Generator().manual_seed(1)) * (2 if vocab == VOCAB else 6)
    lowest = torch.finfo(logits.dtype).min
    kth = torch.topk(logits, 7).values[:, -1:]
    assert torch.equal(ms.filter_top_k(logits.clone(), 7), logits.masked_fill(logits < kth, lowest))

    for p in (0.3, 0.8, 0.999):  # Dream's top_p_logits: a full sort of every row
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, -1).cumsum(-1)
        remove = cum > p
        remove[:, 1:] = remove[:, :-1].clone()
        remove[:, 0] = False
        expected = logits.masked_fill(torch.zeros_like(remove).scatter(-1, order, remove), lowest)
        assert torch.equal(ms.filter_top_p(logits.clone(), p), expected)
    kept = ms.filter_top_p(logits.clone(), 0.8) > lowest
    assert kept.any(-1).all() and (torch.softmax(logits, -1) * kept).sum(-1).min() >= 0.8


def test_distribution_pieces_match_softmax():
    logits = torch.randn(6, VOCAB, generator=torch.Generator().manual_seed(2)) * 3
    logits[:, 3] = torch.finfo(logits.dtype).min  # filtered out
    logits[5, 8] = logits[5, 9] = 20.0  # a tie for the top
    probs = torch.softmax(logits, -1)
    dist = ms.Distribution(logits.clone(), torch.empty_like(logits))
    # Dream's negative entropy, sum p log(p + 1e-10)
    assert torch.allclose(-dist.entropy, (probs * torch.log(probs + 1e-10)).sum(-1), atol=1e-5)
    assert torch.equal(dist.argmax, probs.argmax(-1))
    assert torch.allclose(dist.best_probability, probs.max(-1).values)
    ids = torch.tensor([0, 3, 7, 11, 2, 9])
    assert torch.allclose(dist.probability(ids), probs.gather(-1, ids[:, None]).squeeze(-1))
    top2 = torch.sort(probs, descending=True).values[:, :2]
    assert torch.allclose(dist.margin(), top2[:, 0] - top2[:, 1], atol=1e-7) and dist.margin()[5] == 0
    assert torch.equal(dist.logits, logits)  # margin() put the top logits back


def test_sampling_draws_from_the_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.0, 0.3, 0.15, 0.05]])).repeat(20000, 1)
    dist = ms.Distribution(logits, torch.empty_like(logits))
    counts = torch.bincount(dist.sample(torch.Generator().manual_seed(0)), minlength=5) / 20000
    assert torch.allclose(counts, torch.tensor([0.5, 0.0, 0.3, 0.15, 0.05]), atol=0.015) and counts[1] == 0


# -- events ---------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["low_confidence", "random", "origin", "maskgit_plus", "topk_margin",
                                       "entropy", "rnd1"])
@pytest.mark.parametrize(("temperature", "top_p", "top_k"), [(0.0, 1.0, 0), (0.8, 1.0, 0), (0.8, 0.9, 20)])
def test_canvas_steps_are_consistent(algorithm, temperature, top_p, top_k):
    backend = ToyBackend("dream", canvas_length=8, shift=True)
    events = run(backend, PROMPT, max_steps=5, max_canvases=2, algorithm=algorithm, temperature=temperature,
                 top_p=top_p, top_k=top_k)
    assert isinstance(events[0], PromptEncoded) and isinstance(events[-1], TurnFinished)
    committed = [e for e in events if isinstance(e, BlockCommitted)]
    assert [c.block for c in committed] == [0, 1] and committed[-1].final
    for block, commit in enumerate(committed):
        steps = [e for e in events if isinstance(e, CanvasStep) and e.block == block]
        assert [s.step for s in steps] == list(range(1, len(steps) + 1)) and len(steps) <= 5
        previous = np.zeros(8, dtype=bool)
        for s in steps:
            assert s.tokens.shape == s.argmax.shape == s.accepted.shape == s.changed.shape == (8,)
            assert s.tokens.dtype == np.int32 and s.accepted.dtype == bool
            assert np.array_equal(s.tokens == MASK, ~s.accepted)
            assert np.array_equal(s.argmax[s.accepted], s.tokens[s.accepted])
            assert not (previous & ~s.accepted).any()  # unmasked positions stay unmasked...
            assert np.array_equal(s.tokens[previous], commit.tokens[previous])  # ...with their token
            assert (s.argmax != MASK).all() and 0 <= s.mean_entropy <= np.log(VOCAB)
            previous = s.accepted
        assert previous.all() and np.array_equal(steps[-1].tokens, commit.tokens)


@pytest.mark.parametrize("algorithm", ["low_confidence", "origin", "entropy", "rnd1"])
def test_a_seed_reproduces_a_sampled_generation(algorithm):
    def tokens(seed):
        return generated(run(ToyBackend("llada"), PROMPT, max_steps=4, max_canvases=2, algorithm=algorithm,
                             temperature=1.0, seed=seed))
    assert tokens(7) == tokens(7)
    assert any(tokens(7) != tokens(seed) for seed in (8, 9, 10))


def test_auto_picks_each_familys_algorithm():
    assert {a: ms.resolve_algorithm("auto", a) for a in ("dream", "llada", "llada-moe", "rnd1")} == {
        "dream": "entropy", "llada": "low_confidence", "llada-moe": "low_confidence", "rnd1": "rnd1"}
    assert ms.resolve_algorithm("origin", "llada") == "origin"
