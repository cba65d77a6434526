"""The PyTorch engine against transformers' DiffusionGemma on the same random weights.

Two tiny configurations: A has a prompt longer than the sliding window and two sliding layers
before a full one; B has 8 experts (3 active), sharper logits so that adaptive stopping fires,
and runs several canvases.
"""

from __future__ import annotations

import pytest
import torch

from dg_chat.config import SamplerSettings
from dg_chat.engine.backends.base import SelfCondition
from dg_chat.engine.backends.torch_dg.backend import TorchBackend
from dg_chat.engine.backends.torch_dg.cache import GrowingKVCache
from dg_chat.engine.events import TurnFinished
from dg_chat.engine.generate import ContextOverflowError, generate
from dg_chat.gguf.reader import open_gguf
from tests.support.tiny_dg import convert, hf_model

pytest.importorskip("transformers")
from transformers import DynamicCache

TOL = 1e-4


@pytest.fixture(scope="module")
def model_a(tmp_path_factory):
    model = hf_model(layer_types=("sliding_attention", "sliding_attention", "full_attention"), sliding_window=16)
    return model, convert(model, tmp_path_factory.mktemp("a"))


@pytest.fixture(scope="module")
def model_b(tmp_path_factory):
    model = hf_model(experts=8, top_k=3, sharpness=5.0, seed=3)
    with torch.no_grad():
        model.model.decoder.norm.weight.mul_(2.0)
    return model, convert(model, tmp_path_factory.mktemp("b"))


def ids(n: int, seed: int, high: int = 512) -> torch.Tensor:
    return torch.randint(5, high, (1, n), generator=torch.Generator().manual_seed(seed))


def load(path) -> TorchBackend:
    return TorchBackend(open_gguf(path), "cpu")


def self_condition(logits: torch.Tensor, temperature: float) -> SelfCondition:
    processed = logits / temperature
    return SelfCondition(processed, torch.softmax(processed, dim=-1, dtype=torch.float32))


@torch.no_grad()
def test_logits_match_prefill_decode_self_conditioning_and_commits(model_a):
    model, path = model_a
    backend = load(path)
    prompt = ids(40, 1)  # longer than the 16-token window: sliding layers must clip the prefix
    canvas, canvas2, canvas3 = ids(8, 2), ids(8, 3), ids(8, 4)

    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    ref = model(input_ids=prompt, decoder_input_ids=canvas, past_key_values=cache)
    backend.prefill(prompt[0].tolist())
    first = backend.denoise(canvas[0], None)
    assert (first - ref.logits[0]).abs().max() <= TOL

    sc = self_condition(ref.logits[0], 0.7)
    ref_sc = model(decoder_input_ids=canvas, past_key_values=cache, self_conditioning_logits=sc.logits[None])
    ours_sc = backend.denoise(canvas[0], sc)
    assert (ours_sc - ref_sc.logits[0]).abs().max() <= TOL
    assert (ours_sc - first).abs().max() > 1e-3  # the signal really changes the output

    for committed, nxt in ((canvas, canvas2), (canvas2, canvas3)):
        model.model.encoder(input_ids=committed, past_key_values=cache)
        backend.commit(committed[0])
        ref_next = model(decoder_input_ids=nxt, past_key_values=cache)
        assert (backend.denoise(nxt[0], None) - ref_next.logits[0]).abs().max() <= TOL
    assert backend.cached_tokens == 56


@torch.no_grad()
def test_prefix_reuse_equals_a_fresh_prefill(model_a):
    _, path = model_a
    backend, fresh = load(path), load(path)
    turn1, answer, turn2 = ids(30, 5)[0].tolist(), ids(8, 6)[0], ids(12, 7)[0].tolist()
    canvas = ids(8, 8)[0]
    backend.prefill(turn1)
    backend.commit(answer)
    # the next prompt shares turn1 only: the committed canvas must be rolled back
    assert backend.prefill(turn1 + turn2) == len(turn2)
    fresh.prefill(turn1 + turn2)
    torch.testing.assert_close(backend.denoise(canvas, None), fresh.denoise(canvas, None), atol=1e-5, rtol=0)


@torch.no_grad()
def test_extending_the_cache_equals_encoding_at_once(model_a):
    """A prompt prefilled in two calls, or a committed canvas, must see the whole prefix on the
    full-attention layer (SDPA's is_causal aligns top-left, so it only fits a chunk at position 0)."""
    _, path = model_a
    split, whole, committed = load(path), load(path), load(path)
    prompt, canvas = ids(12, 13)[0].tolist(), ids(8, 14)[0]  # within the 16-token window
    split.prefill(prompt[:5])
    split.prefill(prompt)
    whole.prefill(prompt)
    torch.testing.assert_close(split.denoise(canvas, None), whole.denoise(canvas, None), atol=1e-5, rtol=0)
    committed.prefill(prompt[:4])
    committed.commit(canvas)
    whole.prefill(prompt[:4] + canvas.tolist())
    torch.testing.assert_close(committed.denoise(canvas, None), whole.denoise(canvas, None), atol=1e-5, rtol=0)


@torch.no_grad()
def test_rollback_beyond_the_kept_window_re_encodes(model_a, monkeypatch):
    _, path = model_a
    backend, fresh = load(path), load(path)
    monkeypatch.setattr(GrowingKVCache, "ROLLBACK", 0)
    prompt = ids(40, 9)[0].tolist()
    backend.prefill(prompt)
    backend.commit(ids(8, 10)[0])
    shorter = prompt[:20] + ids(5, 11)[0].tolist()
    assert backend.prefill(shorter) == len(shorter)  # sliding layers lost positions 4..19: start over
    fresh.prefill(shorter)
    canvas = ids(8, 12)[0]
    torch.testing.assert_close(backend.denoise(canvas, None), fresh.denoise(canvas, None), atol=1e-5, rtol=0)


def reference_generate(model, prompt, *, seed, canvases, steps, eos, confidence):
    torch.manual_seed(seed)
    out = model.generate(prompt, max_new_tokens=canvases * model.config.canvas_length, max_denoising_steps=steps,
                         eos_token_id=eos, pad_token_id=0, confidence_threshold=confidence)
    return out.sequences[0, prompt.shape[1]:].tolist()


def our_generate(path, prompt, *, seed, canvases, steps, eos, confidence) -> TurnFinished:
    settings = SamplerSettings(seed=seed, max_steps=steps, max_canvases=canvases, confidence=confidence)
    events = list(generate(load(path), prompt[0].tolist(), settings, end_ids=frozenset(eos),
                           parse=lambda tokens: ("", "")))
    return events[-1]


@torch.no_grad()
def test_generate_is_token_identical_with_adaptive_stop_and_eos_cut(model_b):
    model, path = model_b
    prompt = ids(12, 1, high=500)  # a prompt on which this model's first canvas converges early
    kwargs = dict(seed=7, canvases=4, steps=20, confidence=0.5)
    # a first run without a reachable end token shows which token the second canvas produces
    free_run = reference_generate(model, prompt, eos=[511], **kwargs)
    eos = next(t for t in free_run[10:16] if t not in free_run[:10] and t != 0)
    ref = reference_generate(model, prompt, eos=[eos], **kwargs)
    ours = our_generate(path, prompt, eos=[eos], **kwargs)

    cut = ref.index(eos) + 1
    assert ours.token_ids == ref[:cut]
    assert all(t == 0 for t in ref[cut:])  # transformers pads after the end token; we stop there
    assert len(ours.stats.steps) == 2 and ours.token_ids[-1] == eos
    assert ours.stats.steps[0] < 20  # stable and confident: stopped before the maximum


@torch.no_grad()
def test_generate_identical_over_several_full_canvases(model_b):
    model, path = model_b
    prompt = ids(9, 2)
    kwargs = dict(seed=11, canvases=3, steps=12, confidence=0.005, eos=[511])
    ours = our_generate(path, prompt, **kwargs)
    assert ours.token_ids == reference_generate(model, prompt, **kwargs)
    assert ours.stats.steps == [12, 12, 12]


def test_prompt_longer_than_the_context_is_one_line(tmp_path):
    model = hf_model()
    model.config.text_config.max_position_embeddings = 32
    backend = load(convert(model, tmp_path))
    with pytest.raises(ContextOverflowError) as info:
        next(generate(backend, list(range(5, 35)), SamplerSettings(), end_ids=frozenset({1}),
                      parse=lambda t: ("", "")))
    assert "exceeds the model's context of 32 tokens" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("qtype", ["f16", "bf16", "q8_0"])
@torch.no_grad()
def test_quantized_weights_dequantise_on_the_fly_to_the_same_logits(tmp_path, qtype):
    """The GGUF stores quantised matrices; the reference gets the same values, rounded the same way."""
    import gguf

    model = hf_model(layer_types=("sliding_attention", "full_attention"))
    path = convert(model, tmp_path, qtype=qtype)
    storage = {"f16": gguf.GGMLQuantizationType.F16, "bf16": gguf.GGMLQuantizationType.BF16,
               "q8_0": gguf.GGMLQuantizationType.Q8_0}[qtype]
    for name, tensor in model.named_parameters():
        if tensor.ndim >= 2 and "vision" not in name and "router.proj" not in name:
            if storage == gguf.GGMLQuantizationType.F16 or tensor.shape[-1] % 32:
                rounded = tensor.half().float()
            else:
                quantized = gguf.quants.quantize(tensor.numpy(), storage)
                rounded = torch.from_numpy(gguf.quants.dequantize(quantized, storage))
            tensor.copy_(rounded.reshape(tensor.shape))
    backend = load(path)
    assert any(info.type == storage for info in backend.file.tensors.values())
    prompt, canvas = ids(20, 1), ids(8, 2)
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    ref = model(input_ids=prompt, decoder_input_ids=canvas, past_key_values=cache)
    backend.prefill(prompt[0].tolist())
    assert (backend.denoise(canvas[0], None) - ref.logits[0]).abs().max() <= TOL


def test_too_little_gpu_memory_is_one_line_before_loading(model_a, monkeypatch):
    from dg_chat.engine.backends.torch_dg import backend as torch_backend
    from dg_chat.engine.backends.torch_dg.hparams import HParams
    from dg_chat.engine.backends.torch_dg.weights import device_bytes

    _, path = model_a
    f = open_gguf(path)
    cuda = torch.device("cuda")
    # dense tensors become bf16 on the GPU: the estimate is half the float32 file's tensor bytes
    assert device_bytes(f, cuda, torch.bfloat16) == sum(t.n_bytes for t in f.tensors.values()) // 2
    # what a tiny model needs is mostly the CUDA runtime's 0.8 GB
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (500_000_000, 24 * 10**9))
    with pytest.raises(torch_backend.BackendError,
                       match=r"needs about 0\.8 GB with reference kernels \(.*\) for a 4k context, but 0\.5 GB of GPU "
                             r"memory are free"):
        torch_backend.check_gpu_memory(f, HParams.from_gguf(f), cuda, "reference")
