"""The fused on-device sampler (kernels/sampler.py, torch_dg/fused_sampler.py) against the
reference EntropyBoundSampler, under Triton's interpreter on CPU tensors."""

from __future__ import annotations

import math

import pytest
import torch

from dg_chat.config import SamplerSettings
from dg_chat.engine.backends.torch_dg.fused_sampler import FusedEntropyBoundSampler, StopRule
from dg_chat.engine.backends.torch_dg.kernels import runtime
from dg_chat.engine.backends.torch_dg.kernels.sampler import candidate_count, row_statistics, uniform_canvas
from dg_chat.engine.events import CanvasStep
from dg_chat.engine.sampling import BlockResult, EntropyBoundSampler, categorical_entropy, entropy_bound_accept
from tests.support.host_sync import NoHostSync

pytestmark = pytest.mark.skipif(runtime.unavailable_reason(torch.device("cpu")) is not None,
                                reason="needs triton and TRITON_INTERPRET=1")

C, V = 64, 2048


def device_scalars(temperature: float = 0.7, seed: int = 1234, counter: int = 0):
    return (torch.tensor([temperature]), torch.tensor([seed], dtype=torch.int64),
            torch.tensor([counter], dtype=torch.int64))


def soft_capped_logits(rows: int = C, cols: int = V, seed: int = 0) -> torch.Tensor:
    """Rows from broad to very peaked, soft-capped at 30 like the model's."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-1, 2, rows)[:, None]
    return 30 * torch.tanh(torch.randn(rows, cols, generator=g) * scale / 30)


class PeakedBackend:
    """A deterministic function of the canvas (and the self-conditioning signal): one clear
    target token per position, swayed a little by the canvas so renoise matters."""

    def __init__(self, canvas_length: int = C, vocab_size: int = V):
        g = torch.Generator().manual_seed(0)
        self.canvas_length, self.vocab_size, self.device = canvas_length, vocab_size, "cpu"
        self.target = torch.randint(0, vocab_size, (canvas_length,), generator=g)
        self.base = torch.randn(canvas_length, vocab_size, generator=g) * 2
        self.base[torch.arange(canvas_length), self.target] += 16 + torch.linspace(0, 4, canvas_length)
        self.sway = torch.randn(vocab_size, generator=g) * 0.01
        self.calls = 0

    def denoise(self, canvas: torch.Tensor, self_cond) -> torch.Tensor:
        self.calls += 1
        logits = self.base + self.sway[canvas][:, None] * torch.linspace(-1, 1, self.vocab_size)
        if self_cond is not None:  # the reference hands over probs, the fused sampler lse
            probs = (self_cond.probs if self_cond.probs is not None
                     else (self_cond.logits - self_cond.lse[:, None]).exp())
            logits = logits + 0.1 * probs
        return 30 * torch.tanh(logits / 30)


def run_block(sampler, backend) -> tuple[list[CanvasStep], BlockResult]:
    steps = []
    denoiser = sampler.denoise_block(backend, 0)
    while True:
        try:
            steps.append(next(denoiser))
        except StopIteration as done:
            return steps, done.value


def make(cls, settings: SamplerSettings, seed: int = 7, canvas_length: int = C, vocab_size: int = V):
    return cls(settings, vocab_size=vocab_size, canvas_length=canvas_length,
               generator=torch.Generator().manual_seed(seed))


# -- row statistics --------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["interpreter", "gpu"])
def test_row_statistics_equal_the_reference(layout, monkeypatch):
    # V = 5000: a masked tail. Interpreter layout: 64 rows x 3-tile chunks (3072 + 1928 columns);
    # GPU layout: one row per program, 2048-column tiles, 3 chunks
    rows = C if layout == "interpreter" else 8
    monkeypatch.setattr(runtime, "interpreting", lambda: layout == "interpreter")
    logits = soft_capped_logits(rows, 5000)
    logits[0] = 0.0
    logits[0, [5, 9, 1500]] = 1.0  # ties: the first index wins, as in torch.argmax
    logits[1, 1000:1100] = 5.0  # ties across tiles of a chunk
    logits[2, 3000:4100] = 5.0  # ties across chunks
    logits[3] = -30.0
    logits[3, 4999] = 30.0  # very peaked (entropy ~1e-61), in the tail tile
    temperature, seed, counter = device_scalars(0.4)
    processed = logits / temperature
    stats = row_statistics(logits, temperature, seed, counter)

    assert torch.equal(logits, processed)  # written back in place: the self-conditioning input
    assert torch.equal(stats.argmax, processed.argmax(dim=-1))
    assert stats.argmax[:4].tolist() == [5, 1000, 3000, 4999]
    exact = processed.double()
    log_p = exact.log_softmax(dim=-1)
    torch.testing.assert_close(stats.lse.double(), exact.logsumexp(dim=-1), rtol=1e-6, atol=0)
    torch.testing.assert_close(stats.entropy.double(), -(log_p.exp() * log_p).sum(dim=-1), rtol=1e-5, atol=1e-30)
    # against the float32 reference: its own log p = y - lse carries lse's rounding (an ulp of |lse| <= 75)
    reference = categorical_entropy(processed.clone())
    torch.testing.assert_close(stats.entropy, reference, rtol=1e-5, atol=4 * 2**-17)
    torch.testing.assert_close(stats.lse, processed.logsumexp(dim=-1), rtol=1e-6, atol=0)
    # the settled-row candidates: each tile's two largest (the first index on ties), V past the row
    tile = 1024 if layout == "interpreter" else 2048
    tiles = -(-5000 // tile)
    assert stats.candidates.shape == (rows, candidate_count(rows, 5000)) == (rows, 2 * tiles)
    padded = torch.full((rows, tiles * tile), float("-inf"))
    padded[:, :5000] = processed
    order = padded.view(rows, tiles, tile).double().sort(dim=-1, descending=True, stable=True).indices[..., :2]
    expected = order + torch.arange(tiles)[None, :, None] * tile
    expected[padded.view(rows, tiles, tile).gather(-1, order) == float("-inf")] = 5000
    assert torch.equal(stats.candidates, expected.view(rows, -1))
    assert stats.candidates[[0, 1, 3], :2].tolist() == [[5, 9], [1000, 1001], [0, 1]]  # ties: first indices
    assert stats.candidates[3, -2:].tolist() == [4999, 4096]  # the tail tile: its peak, then its first column


def test_a_tile_without_two_finite_values_names_no_candidate_past_them():
    logits = torch.full((1, 3000), float("-inf"))  # damaged weights: every logit but one is -inf
    logits[0, 7] = 1.0
    candidates = row_statistics(logits, *device_scalars()).candidates[0].tolist()
    assert candidates[:2] == [7, 3000] and set(candidates[2:]) == {3000}  # V: nothing (never a duplicate of 7)


def test_gumbel_max_draws_follow_softmax_at_the_temperature():
    probs = torch.tensor([0.45, 0.2, 0.12, 0.1, 0.06, 0.04, 0.02, 0.01])
    rows, temperature = 20_000, 0.7
    logits = probs.log().repeat(rows, 1)  # every row an independent draw: its own Philox counters
    stats = row_statistics(logits, *device_scalars(temperature, seed=99))
    expected = torch.softmax(probs.log() / temperature, dim=-1)
    counts = torch.bincount(stats.draw, minlength=len(probs)).double()
    chi_square = ((counts - rows * expected) ** 2 / (rows * expected)).sum().item()
    assert chi_square < 24.3  # p = 0.001 for 7 degrees of freedom
    assert (counts / rows - expected).abs().max() < 0.01  # T = 1 would be off by 0.14 on the top token
    assert (counts / rows - probs).abs().max() > 0.04


def test_draws_and_renoise_depend_on_seed_and_counter_only():
    logits = torch.zeros(C, 64)  # uniform rows: every draw is pure RNG
    a = row_statistics(logits.clone(), *device_scalars(seed=5, counter=3))
    again = row_statistics(logits.clone(), *device_scalars(seed=5, counter=3))
    next_step = row_statistics(logits.clone(), *device_scalars(seed=5, counter=4))
    other_seed = row_statistics(logits.clone(), *device_scalars(seed=6, counter=3))
    assert torch.equal(a.draw, again.draw) and torch.equal(a.noise, again.noise)
    for other in (next_step, other_seed):
        assert (a.draw != other.draw).float().mean() > 0.8
        assert (a.noise != other.noise).float().mean() > 0.8
    assert (a.draw != a.noise).float().mean() > 0.8  # separate streams


def test_renoise_and_first_canvas_are_uniform_tokens_in_range():
    _, seed, counter = device_scalars()
    vocab = 1000  # not a power of two
    canvas = uniform_canvas(20_000, vocab, seed, counter)
    assert canvas.dtype == torch.int64 and 0 <= canvas.min() and canvas.max() < vocab
    counts = torch.bincount(canvas // 100, minlength=10).double()  # 10 bins of 100 tokens
    assert ((counts - 2000) ** 2 / 2000).sum() < 27.9  # chi-square, p = 0.001, 9 dof
    noise = row_statistics(torch.zeros(C, vocab), *device_scalars(seed=5)).noise
    assert 0 <= noise.min() and noise.max() < vocab and len(noise.unique()) > C * 0.9


# -- the rest of a step on the device --------------------------------------------------------------

def test_acceptance_and_renoise_match_the_reference_step():
    settings = SamplerSettings(max_steps=8)
    backend = PeakedBackend()
    canvas = torch.randint(0, V, (C,), generator=torch.Generator().manual_seed(1))
    fused = make(FusedEntropyBoundSampler, settings)._step(backend, canvas, None, 1)
    reference = make(EntropyBoundSampler, settings)._step(backend, canvas, None, settings.max_steps)
    assert torch.equal(fused.accepted, entropy_bound_accept(fused.entropy, settings.entropy_bound))
    assert torch.equal(fused.accepted, reference.accepted)  # the same logits: no entropy near the bound's cut
    assert torch.equal(fused.argmax, reference.argmax)
    assert torch.equal(fused.self_cond.logits, reference.self_cond.logits)
    torch.testing.assert_close(fused.self_cond.lse, reference.self_cond.logits.logsumexp(dim=-1))
    assert fused.self_cond.probs is None
    kept = fused.accepted
    assert torch.equal(fused.canvas[kept], backend.target[kept])  # peaked: the draw is the target
    assert (fused.canvas[~kept] != backend.target[~kept]).all()  # renoised (V = 2048: a hit is unlikely)


class HistoryStopRule:
    """The reference sampler's stop rule, host side (a deque of the last `stability` argmaxes)."""

    def __init__(self, stability: int, confidence: float):
        self.stability, self.confidence, self.history = stability, confidence, []

    def update(self, argmax: torch.Tensor, entropy: torch.Tensor) -> bool:
        stable = len(self.history) == self.stability and all(torch.equal(h, argmax) for h in self.history)
        self.history = (self.history + [argmax])[-self.stability:] if self.stability else []
        return stable and bool(entropy.mean() < self.confidence)


@pytest.mark.parametrize("stability", [0, 1, 2])
def test_stop_rule_on_the_device_matches_the_history_rule(stability):
    settings = SamplerSettings(stability=stability, confidence=0.01)
    a, b = torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4])
    low, high, edge = torch.full((3,), 0.001), torch.full((3,), 0.5), torch.full((3,), 0.01)
    script = [(a, low), (a, high), (a, low), (b, low), (b, low), (b, edge), (b, low), (a, low)]
    rule, expected = StopRule(settings, 3, torch.device("cpu")), HistoryStopRule(stability, 0.01)
    rule.reset(torch.tensor([1, 2, 3]))  # a first canvas equal to the first argmax counts for nothing
    previous = torch.tensor([1, 2, 3])
    for argmax, entropy in script:
        changed, mean_entropy, stop = rule.update(argmax, entropy)
        assert bool(stop) == expected.update(argmax, entropy)
        assert torch.equal(changed, argmax != previous) and mean_entropy == entropy.mean()
        previous = argmax


def test_a_step_never_synchronises_with_the_host(monkeypatch):
    sampler = make(FusedEntropyBoundSampler, SamplerSettings(max_steps=8))
    backend = PeakedBackend()
    canvas = uniform_canvas(C, V, sampler.seed, sampler.counter)
    sampler.stop_rule.reset(canvas)
    first = sampler._step(backend, canvas, None, 1)
    for name in ("item", "tolist", "numpy", "cpu"):  # invisible to a dispatch mode on CPU tensors
        monkeypatch.setattr(torch.Tensor, name, forbidden(getattr(torch.Tensor, name)))
    with NoHostSync(), runtime.counting() as counter:
        record = sampler._step(backend, first.canvas, first.self_cond, 2)
        sampler._summary(record)
    assert counter.launches == 2


def forbidden(method):
    def guarded(self, *args, **kwargs):
        if not runtime.in_launch:
            raise AssertionError(f"host synchronisation in a step: Tensor.{method.__name__}")
        return method(self, *args, **kwargs)
    return guarded


# -- whole blocks ----------------------------------------------------------------------------------

def test_denoise_block_steps_and_stops_like_the_reference():
    settings = SamplerSettings(max_steps=16, confidence=0.002)  # mean entropy crosses it on step 4
    fused_steps, fused = run_block(make(FusedEntropyBoundSampler, settings), PeakedBackend())
    reference_steps, reference = run_block(make(EntropyBoundSampler, settings), PeakedBackend())
    assert fused.steps == reference.steps == len(fused_steps) == 4
    assert torch.equal(fused.tokens, reference.tokens) and torch.equal(fused.tokens, PeakedBackend().target)
    for ours, theirs in zip(fused_steps, reference_steps, strict=True):
        assert (ours.block, ours.step, ours.max_steps) == (theirs.block, theirs.step, theirs.max_steps)
        assert ours.tokens.dtype == ours.argmax.dtype == theirs.tokens.dtype
        assert ours.accepted.dtype == ours.changed.dtype == bool
        assert (ours.argmax == theirs.argmax).all() and (ours.changed == theirs.changed).all()
        assert ours.mean_entropy == pytest.approx(theirs.mean_entropy, rel=0.02)
        assert abs(int(ours.accepted.sum()) - int(theirs.accepted.sum())) <= 2
        kept = ours.accepted
        assert (ours.tokens[kept] == ours.argmax[kept]).all()


def test_seeded_blocks_are_reproducible_and_a_new_seed_differs():
    settings = SamplerSettings(max_steps=3, confidence=0.0)
    runs = [run_block(make(FusedEntropyBoundSampler, settings, seed=seed), PeakedBackend())[0] for seed in (3, 3, 4)]
    tokens = [[step.tokens.tolist() for step in steps] for steps in runs]
    assert tokens[0] == tokens[1] and tokens[0] != tokens[2]
    assert len(runs[0]) == 3  # confidence 0: never stops early
    assert all(not math.isnan(step.mean_entropy) for step in runs[0])
