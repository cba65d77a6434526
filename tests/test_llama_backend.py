"""The llama.cpp backend on tiny random GGUFs of all four architectures, loaded by the real libllama."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dg_chat.config import SamplerSettings, Settings
from dg_chat.engine.backends.llama import PROMPT_BUDGET, LlamaBackend, LlamaError, open_backend
from dg_chat.engine.backends.llama_tokenizer import LlamaTokenizer
from dg_chat.engine.events import BlockCommitted, CanvasStep, PromptEncoded, TurnFinished
from dg_chat.engine.generate import ContextOverflowError, generate
from dg_chat.errors import DgChatError
from dg_chat.gguf.reader import open_gguf
from dg_chat.text.chat import end_token_ids
from scripts import make_tiny_llama_models as tiny

ARCHITECTURES = tiny.ARCHITECTURES
CHAT = "<|im_start|>user\nHello, world!<|im_end|>\n<|im_start|>assistant\n"


def end_ids(backend: LlamaBackend, tokenizer: LlamaTokenizer) -> frozenset[int]:
    with open_gguf(backend.path) as f:
        return end_token_ids(f.metadata, tokenizer)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-llama")
    for arch in ARCHITECTURES:
        tiny.write_model(out / f"{arch}.gguf", arch)
    return out


@pytest.fixture(scope="module")
def loaded(model_dir):
    parts = {}
    for arch in ARCHITECTURES:
        backend = LlamaBackend(model_dir / f"{arch}.gguf", max_canvases=2, n_threads=1)
        parts[arch] = (backend, LlamaTokenizer(backend, backend.info.tokenizer_model))
    yield parts
    for backend, _ in parts.values():
        backend.close()


def turn(backend, tokenizer, **settings):
    s = SamplerSettings(**{"max_steps": 4, "max_canvases": 2, "seed": 11, **settings})
    prompt = tokenizer.encode_parts(tokenizer.split_specials(CHAT))  # CHAT is trusted template text
    return prompt, list(generate(backend, prompt, s, end_ids=end_ids(backend, tokenizer),
                                 parse=lambda ids: ("", tokenizer.decode(ids))))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_generation_runs_through_the_shared_loop(loaded, arch):
    backend, tokenizer = loaded[arch]
    prompt, events = turn(backend, tokenizer)
    assert isinstance(events[0], PromptEncoded) and events[0].n_tokens == len(prompt)
    assert isinstance(events[-1], TurnFinished) and not events[-1].stopped
    steps = [e for e in events if isinstance(e, CanvasStep)]
    commits = [e for e in events if isinstance(e, BlockCommitted)]
    assert 1 <= len(commits) <= 2 and commits[-1].final
    n = backend.canvas_length
    for commit in commits:
        block = [s for s in steps if s.block == commit.block]
        assert 1 <= len(block) <= 4
        for s in block:
            assert s.tokens.shape == s.accepted.shape == (n,)
            assert np.array_equal(s.tokens == backend.mask_token_id, ~s.accepted)
        assert block[-1].accepted.all()
        assert np.array_equal(commit.tokens, block[-1].tokens[:len(commit.tokens)])
    finished = events[-1]
    assert finished.token_ids == [t for c in commits for t in c.tokens.tolist()]
    assert finished.answer == tokenizer.decode(finished.token_ids)
    assert backend.mask_token_id not in finished.token_ids


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_seed_reproduces_the_turn(loaded, arch):
    backend, tokenizer = loaded[arch]

    def run(seed):
        _, events = turn(backend, tokenizer, seed=seed, temperature=0.9)
        return [e.tokens.tolist() for e in events if isinstance(e, CanvasStep)]

    assert run(5) == run(5)
    assert run(5) != run(6)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_logits_are_a_zero_copy_view_of_the_right_rows(loaded, arch):
    backend, _ = loaded[arch]
    lib = backend.lib
    backend.prefill([5, 6, 7, 8])
    canvas = torch.full((backend.canvas_length,), backend.mask_token_id)
    canvas[:3] = torch.tensor([9, 10, 11])
    logits = backend.denoise(canvas, None)
    raw = np.ctypeslib.as_array(lib.llama_get_logits(backend._handles["ctx"]),
                                shape=(4 + len(canvas), backend.vocab_size))
    first_row = 3 if backend.shift_logits else 4
    assert backend.shift_logits == (arch in ("dream", "rnd1"))
    assert logits.shape == (len(canvas), backend.vocab_size) and logits.dtype == torch.float32
    assert logits.data_ptr() == raw.ctypes.data + first_row * backend.vocab_size * 4
    assert torch.equal(logits, torch.from_numpy(raw[first_row:first_row + len(canvas)].copy()))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_attention_is_bidirectional(loaded, arch):
    backend, _ = loaded[arch]
    backend.prefill([5, 6, 7])
    canvas = torch.full((backend.canvas_length,), backend.mask_token_id)
    before = backend.denoise(canvas, None)[1].clone()
    canvas[-1] = 42
    assert not torch.equal(before, backend.denoise(canvas, None)[1])


def test_context_bookkeeping(loaded):
    backend, _ = loaded["llada"]
    assert backend.prefill([1, 2, 3]) == 3
    assert backend.prefill([1, 2, 3, 4]) == 1
    assert backend.prefill([1, 9]) == 1
    backend.commit(torch.tensor([7, 8, 9]))
    assert backend.cached_tokens == 5


def test_requests_libllama_would_abort_on_raise_instead(loaded):
    backend, _ = loaded["llada"]
    backend.prefill([1, 2, 3])
    too_long = torch.full((backend.context_length,), backend.mask_token_id)
    with pytest.raises(LlamaError, match="do not fit"):
        backend.denoise(too_long, None)
    with pytest.raises(LlamaError, match="more than"):
        backend.prefill([1] * (backend.context_length + 1))
    with pytest.raises(LlamaError, match="outside the model's"):
        backend.prefill([1, backend.vocab_size])


def n_ubatch(backend: LlamaBackend) -> int:
    return backend.lib.llama_n_ubatch(backend._handles["ctx"])


def test_context_is_sized_for_the_canvases_and_capped_by_training(tmp_path):
    path = tiny.write_model(tmp_path / "short.gguf", "dream", context_length=600)
    gguf = open_gguf(path)
    opened = open_backend(gguf, Settings(sampler=SamplerSettings(max_canvases=2)))
    backend, tokenizer = opened.backend, opened.tokenizer
    assert gguf._map.closed  # parsed once, then left to libllama
    try:
        assert backend.canvas_length == 256 and backend.context_length == backend.window == n_ubatch(backend) == 600
        assert tokenizer.vocab_size == backend.vocab_size
    finally:
        backend.close()
    backend = LlamaBackend(tiny.write_model(tmp_path / "llada.gguf", "llada"), max_canvases=3, n_threads=1)
    assert backend.context_length == 4096 and backend.window == n_ubatch(backend) == 3 * 32 + PROMPT_BUDGET
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(LlamaError, match="closed"):
        backend.denoise(torch.zeros(32, dtype=torch.int64), None)


def test_a_long_prompt_gets_the_models_whole_context(tmp_path):
    """Issue 12 item 6: 3,842 tokens to a LLaDA of 4,096 tokens of context were refused as over 2,176."""
    backend = LlamaBackend(tiny.write_model(tmp_path / "llada.gguf", "llada", context_length=4096), n_threads=1)
    try:
        settings = SamplerSettings(max_steps=2, max_canvases=4, seed=1, temperature=0.0)
        prompt = [5 + i % 300 for i in range(3842)]
        events = list(generate(backend, prompt, settings, end_ids=frozenset(), parse=lambda ids: ("", "")))
        assert events[0].n_tokens == 3842 and backend.window == n_ubatch(backend) == 4096
        assert sum(isinstance(e, BlockCommitted) for e in events) == 4  # (4096 - 3842) // 32 = 7 fit
        assert backend.cached_tokens == 3842 + 3 * 32 and not events[-1].stopped
        with pytest.raises(ContextOverflowError, match="4080 tokens; with a 32-token canvas it exceeds "
                                                       "the model's context of 4096 tokens"):
            next(generate(backend, prompt + [5] * 238, settings, end_ids=frozenset(), parse=lambda ids: ("", "")))
    finally:
        backend.close()


def test_the_context_grows_for_a_longer_chat_and_keeps_its_tokens(tmp_path):
    backend = LlamaBackend(tiny.write_model(tmp_path / "llada.gguf", "llada", context_length=8192),
                           max_canvases=2, n_threads=1)
    try:
        short, long = [7, 8, 9], [7, 8, 9, *range(10, 310)] * 10
        canvas = torch.full((32,), backend.mask_token_id)
        backend.prefill(short)
        before = backend.denoise(canvas, None).clone()
        assert backend.window == 2 * 32 + PROMPT_BUDGET
        backend.prefill(long)
        assert backend.window == n_ubatch(backend) == len(long) + 2 * 32 + PROMPT_BUDGET
        backend.prefill(short)
        assert torch.equal(backend.denoise(canvas, None), before)
        canvas = torch.full((backend.window - len(short) + 1,), backend.mask_token_id)  # a wider window than reserved
        assert backend.denoise(canvas, None).shape == (len(canvas), backend.vocab_size)
        assert backend.window == n_ubatch(backend) == len(short) + len(canvas) + PROMPT_BUDGET
    finally:
        backend.close()


# -- tokenizer ------------------------------------------------------------------------------

def test_user_text_never_becomes_special_tokens(loaded):
    _, tok = loaded["dream"]
    im_end = tok.token_id("<|im_end|>")
    assert tok.encode_parts(tok.split_specials("<|im_end|>")) == [im_end]
    assert im_end not in tok.encode("<|im_end|>")
    assert tok.decode(tok.encode("<|im_end|>")) == "<|im_end|>"
    assert tok.special_id("<|im_end|>") == im_end and tok.special_id("the") is None


@pytest.mark.parametrize("text", ["Hello, world! How are you today?", "  spaced\n\tout  ", "ünïcödé 世界 🙂", ""])
def test_decode_inverts_encode(loaded, text):
    _, tok = loaded["llada"]
    assert tok.decode(tok.encode(text)) == text


def test_fewest_tokens_is_a_lower_bound(loaded):
    for arch, (_, tok) in loaded.items():
        longest = max(range(tok.vocab_size), key=lambda i: len(tok.decode([i], skip_special=False)))
        texts = [tok.decode([longest], skip_special=False) * 40, " " * 3000, "ünïcödé 世界 🙂 " * 99, "a\n" * 999]
        assert [text for text in texts if tok.fewest_tokens(text) > len(tok.encode(text))] == [], arch


def test_special_ids_and_end_tokens(loaded):
    _, dream = loaded["dream"]
    _, llada = loaded["llada"]
    assert end_ids(*loaded["dream"]) == {dream.token_id("<|endoftext|>"), dream.token_id("<|im_end|>")}
    assert dream.mask_id == loaded["dream"][0].mask_token_id == dream.token_id("<|mask|>")
    assert llada.add_bos and not dream.add_bos
    assert llada.encode("hi", add_bos=True)[0] == llada.bos_id
    assert dream.model == "gpt2" and dream.vocab_size == 384
    with pytest.raises(DgChatError, match="no token"):
        dream.token_id("no such token")


def test_pieces_are_printable_and_decode_skips_what_it_must(loaded):
    _, tok = loaded["dream"]
    newline = tok.encode("\n")
    assert tok.piece(newline[0]) == "\u240a"  # ␊, not a line break
    escape = tok.encode("\x1b")
    assert "\x1b" not in tok.piece(escape[0])
    assert tok.piece(-1) == tok.piece(10**9) == "\ufffd"
    im_end = tok.token_id("<|im_end|>")
    assert tok.piece(im_end) == "<|im_end|>"
    hi = tok.encode("hi")
    assert tok.decode([*hi, im_end, 10**9, -3]) == "hi"
    assert tok.decode([*hi, im_end], skip_special=False) == "hi<|im_end|>"
