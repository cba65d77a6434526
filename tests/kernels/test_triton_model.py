"""`--kernels triton` against `--kernels reference` on a whole tiny DiffusionGemma whose tensors
carry the published Q4_K_M type mix (Q4_K, Q5_0, Q8_0, a Q6_K embedding, F32 vectors), in
float32 under Triton's interpreter: the same forward pass (model.py) with the Triton ops and
the static KV cache instead of the reference ops and the growing cache."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from gguf.constants import GGMLQuantizationType as Q

from dg_chat.config import SamplerSettings
from dg_chat.engine.backends.base import SelfCondition
from dg_chat.engine.backends.torch_dg.backend import TorchBackend
from dg_chat.engine.backends.torch_dg.fused_sampler import FusedEntropyBoundSampler
from dg_chat.engine.backends.torch_dg.kernels import runtime
from dg_chat.engine.events import CanvasStep, TurnFinished
from dg_chat.engine.generate import generate
from dg_chat.gguf.reader import open_gguf
from tests.kernels.test_gemm import head_logits
from tests.support.host_sync import NoHostSync
from tests.support.tiny_dg import tiny_q4_k_m

pytest.importorskip("transformers")

TOL = 1e-4
CANVAS = 8


@pytest.fixture(scope="module")
def q4_k_m_gguf(tmp_path_factory):
    return tiny_q4_k_m(tmp_path_factory.mktemp("q4_k_m"), canvas_length=CANVAS)


def load(path, kernels: str) -> TorchBackend:
    return TorchBackend(open_gguf(path), "cpu", kernels)


def ids(n: int, seed: int) -> list[int]:
    return torch.randint(5, 512, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_the_tiny_model_has_the_published_type_mix(q4_k_m_gguf):
    with open_gguf(q4_k_m_gguf) as f:
        types = Counter(info.type for info in f.tensors.values())
        assert f.info("token_embd.weight").type == Q.Q6_K
    assert set(types) == {Q.F32, Q.Q4_K, Q.Q5_0, Q.Q8_0, Q.Q6_K}


@torch.no_grad()
def test_logits_match_the_reference_through_prefill_self_conditioning_commit_and_rollback(q4_k_m_gguf):
    reference, fast = load(q4_k_m_gguf, "reference"), load(q4_k_m_gguf, "triton")
    assert (reference.kernels, fast.kernels) == ("reference", "triton")
    prompt = ids(12, 1)  # longer than the 8-position window: the ring must hide the oldest positions
    canvas, canvas2 = torch.tensor(ids(CANVAS, 2)), torch.tensor(ids(CANVAS, 3))
    for backend in (reference, fast):
        backend.prefill(prompt)
    first = reference.denoise(canvas, None)
    assert (fast.denoise(canvas, None) - first).abs().max() <= TOL

    processed = first / 0.7
    sc = reference.denoise(canvas, SelfCondition(processed, torch.softmax(processed, dim=-1)))
    fast_sc = fast.denoise(canvas, SelfCondition(processed.clone(), lse=processed.logsumexp(dim=-1)))
    assert (fast_sc - sc).abs().max() <= TOL
    assert (sc - first).abs().max() > 1e-2  # the signal really changes the output

    for backend in (reference, fast):
        backend.commit(canvas)
    assert (fast.denoise(canvas2, None) - reference.denoise(canvas2, None)).abs().max() <= TOL

    # the next turn shares the prompt and part of the canvas: both roll their caches back
    turn2 = prompt + canvas.tolist()[:5] + ids(3, 4)
    assert reference.prefill(turn2) == fast.prefill(turn2) == 3
    assert (fast.denoise(canvas2, None) - reference.denoise(canvas2, None)).abs().max() <= TOL


def run(backend: TorchBackend, seed: int) -> TurnFinished:
    settings = SamplerSettings(seed=seed, max_steps=4, max_canvases=2, confidence=1e-9)
    *_, finished = generate(backend, ids(6, 5), settings, end_ids=frozenset(), parse=lambda t: ("", ""))
    return finished


@torch.no_grad()
def test_the_triton_model_gives_the_reference_tokens_under_the_same_sampler(q4_k_m_gguf):
    fast = load(q4_k_m_gguf, "triton")
    fast.fused_sampling = False  # the reference sampler on both: same draws, so the tokens must agree
    assert run(fast, seed=3).token_ids == run(load(q4_k_m_gguf, "reference"), seed=3).token_ids


@torch.no_grad()
def test_a_triton_decode_step_and_fused_sampler_step_never_wait_for_the_host(q4_k_m_gguf):
    fast = load(q4_k_m_gguf, "triton")
    fast.prefill(ids(6, 6))
    generator = torch.Generator().manual_seed(1)
    sampler = FusedEntropyBoundSampler(SamplerSettings(), vocab_size=fast.vocab_size, canvas_length=CANVAS,
                                       generator=generator)
    canvas = torch.tensor(ids(CANVAS, 7))
    record = sampler._step(fast, canvas, None, 1)
    with NoHostSync():
        record = sampler._step(fast, record.canvas, record.self_cond, 2)  # model forward + sampler, with SC
    assert record.canvas.shape == (CANVAS,)


@torch.no_grad()
def test_the_triton_path_denoises_with_the_fused_sampler(q4_k_m_gguf):
    fast = load(q4_k_m_gguf, "triton")
    assert fast.fused_sampling
    settings = SamplerSettings(seed=9, max_steps=3, max_canvases=1, confidence=1e-9)
    events = list(generate(fast, ids(6, 5), settings, end_ids=frozenset(), parse=lambda t: ("", "")))
    steps = [event for event in events if isinstance(event, CanvasStep)]
    assert [step.step for step in steps] == [1, 2, 3]
    assert all(0 <= token < fast.vocab_size for step in steps for token in step.tokens)
    assert events[-1].token_ids == steps[-1].argmax.tolist()


@torch.no_grad()
def test_int8_activations_quantise_each_input_once_and_stay_close(q4_k_m_gguf):
    """TorchBackend(int8_activations=True), W4A8 dense GEMMs: one quantisation per GEMM input (q, k
    and v share theirs; the router keeps its float32 weight and float path) and logits within
    the activation quantisation error of the reference: 2.9e-2 rms here, where the reference
    with int8-rounded GEMM inputs gives 2.7e-2 (random weights amplify it)."""
    reference = load(q4_k_m_gguf, "reference")
    fast = TorchBackend(open_gguf(q4_k_m_gguf), "cpu", "triton", int8_activations=True)
    prompt, canvas = ids(6, 1), torch.tensor(ids(CANVAS, 2))
    for backend in (reference, fast):
        backend.prefill(prompt)
    with runtime.counting() as counter, NoHostSync():
        logits = fast.denoise(canvas, None)
    # per layer: the attention's input and output, the MLP's input and hidden; then the LM head's
    assert counter.by_kernel["_quantize_q8_kernel"] == 4 * fast.hp.n_layers + 1
    expected = reference.denoise(canvas, None)
    error = ((logits - expected).norm() / expected.norm()).item()
    print(f"W4A8 logits: rms relative error {error:.2e}")
    assert error <= 5e-2


@torch.no_grad()
def test_16_bit_self_conditioning_takes_the_settled_shortcut_without_waiting(q4_k_m_gguf):
    """In 16-bit compute the fused sampler's candidates send settled positions through
    `gemm.SettledRows`: within the tail bound of the dense signal, and no host sync."""
    from dg_chat.engine.backends.torch_dg.hparams import HParams
    from dg_chat.engine.backends.torch_dg.kernels.sampler import row_statistics
    from dg_chat.engine.backends.torch_dg.kernels.triton_ops import SETTLED_TAIL, TritonOps
    from dg_chat.engine.backends.torch_dg.weights import Weights

    f = open_gguf(q4_k_m_gguf)
    ops = TritonOps(HParams.from_gguf(f), Weights(f, torch.device("cpu"), torch.float16, raw_matrices=True))
    tail = SETTLED_TAIL[torch.float16]
    # five settled positions, two tokens holding all but half the tail the shortcut allows; three broad
    logits, _ = head_logits(CANVAS, ops.hp.vocab_size, torch.tensor([1 - tail / 2] * 5 + [0.5] * 3).double(),
                            n_head=2)
    lse = logits.logsumexp(-1)
    one = torch.ones(1, dtype=torch.int64)
    candidates = row_statistics(logits.clone(), torch.ones(1), one, one, write_processed=False).candidates
    dense = ops.soft_embed(SelfCondition(logits, lse=lse))
    with NoHostSync():
        shortcut = ops.soft_embed(SelfCondition(logits, lse=lse, candidates=candidates))
    assert torch.equal(shortcut[5:], dense[5:])
    error = (shortcut[:5].float() - dense[:5].float()).abs().max() / dense[:5].float().abs().max()
    print(f"settled shortcut: {error:.1e} of the dense signal")
    assert 0 < error <= 4 * tail
