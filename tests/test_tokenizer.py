"""Tokenizer from GGUF metadata: llama.cpp parity, no forged special tokens, round trips, canvas pieces."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from gguf.constants import TokenType
from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

from dg_chat.errors import DgChatError
from dg_chat.gguf.reader import open_gguf
from dg_chat.text.gguf_vocab import bpe_metadata
from dg_chat.text.tokenizer import Tokenizer, visible

CASE_SEPARATOR = "\n__ggml_vocab_test__\n"
ROUND_TRIP_TEXTS = [
    "Hello, world!",
    "  leading and trailing  ",
    "whitespace    runs\t\tand\n\n\nnewlines\r\n",
    "Grüße aus Köln – naïve café, нещо на Български, 我想在apple工作, កាន់តែពិសេស",
    "emoji 🚀😶‍🌫️👋🏽 ✅ 🦙🦙",
    "def f(x):\n    return {'a': [x ** 2, \"\\n\"]}  # comment\n",
    "<|turn>user\n<bos> fake <turn|> <|channel>thought\n<channel|> <|im_end|>",
    "\x1b[31mred\x1b[0m \x00 \x7f",
    "",
]
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "A diffusion model drafts a whole block of tokens and refines it in parallel.",
    "def add(a, b):\n    return a + b\n",
    "Numbers like 12345 and 3.14159 appear here, and so do emoji: 🚀 ✅.",
]


def llama_cases(vocab: Path) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test vectors, read as tests/test-tokenizer-0.cpp reads them: cases
    separated (or ended) by a marker line, one line of ids per case."""
    raw = Path(f"{vocab}.inp").read_bytes().decode("utf-8")
    cases = raw.removesuffix(CASE_SEPARATOR).split(CASE_SEPARATOR)
    lines = Path(f"{vocab}.out").read_bytes().decode("utf-8").splitlines()
    assert len(cases) == len(lines)
    return [(case, [int(i) for i in line.split()]) for case, line in zip(cases, lines, strict=True)]


@pytest.fixture(scope="module")
def trained() -> tuple[HFTokenizer, Tokenizer]:
    """A small byte-level BPE trained with `tokenizers`, and ours built from its GGUF metadata."""
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(TRAINING_TEXT, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return hf, Tokenizer.from_metadata(bpe_metadata(hf, bos_token="<|endoftext|>", eos_token="<|endoftext|>"))


def test_gemma4_matches_llama_cpp_on_every_test_case(gemma4_vocab: Path, gemma4: Tokenizer) -> None:
    cases = llama_cases(gemma4_vocab)
    mismatches = [(text, expected) for text, expected in cases if gemma4.encode(text) != expected]
    assert len(cases) == 46
    assert mismatches == []


@pytest.mark.parametrize("name", ["gpt-2", "qwen2", "llama-bpe"])
def test_byte_level_bpe_matches_llama_cpp_on_every_test_case(llama_vocab, name: str) -> None:
    vocab = llama_vocab(name)
    tokenizer = Tokenizer.from_metadata(open_gguf(vocab).metadata)
    cases = llama_cases(vocab)
    mismatches = [(text, expected) for text, expected in cases if tokenizer.encode(text) != expected]
    assert len(cases) > 40
    assert mismatches == []
    assert all(tokenizer.decode(tokenizer.encode(text)) == text for text, _ in cases)


def test_fewest_tokens_is_a_lower_bound(gemma4: Tokenizer, gemma4_vocab: Path, llama_vocab) -> None:
    tokenizers = [(gemma4, gemma4_vocab)] + [(Tokenizer.from_metadata(open_gguf(vocab).metadata), vocab)
                                             for vocab in map(llama_vocab, ["gpt-2", "qwen2", "llama-bpe"])]
    for tokenizer, vocab in tokenizers:
        longest = max(range(tokenizer.vocab_size), key=lambda i: len(tokenizer.decode([i], skip_special=False)))
        runs = [tokenizer.decode([longest], skip_special=False) * 50, " " * 4000, "\n" * 4000, "é" * 999]
        texts = [text for text, _ in llama_cases(vocab)] + ROUND_TRIP_TEXTS + runs
        assert [text for text in texts if tokenizer.fewest_tokens(text) > len(tokenizer.encode(text))] == []
        assert tokenizer.longest_token <= 128  # so 50 MB are over 390,000 tokens: refused without encoding


def test_gemma4_special_token_ids(gemma4: Tokenizer) -> None:
    assert (gemma4.vocab_size, gemma4.model) == (262_144, "gemma4")
    assert (gemma4.pad_id, gemma4.eos_id, gemma4.bos_id, gemma4.mask_id) == (0, 1, 2, 4)
    assert gemma4.add_bos is True
    assert [gemma4.token_id(t) for t in ("<|turn>", "<turn|>", "<|think|>", "<|channel>", "<channel|>")] == \
        [105, 106, 98, 100, 101]
    assert gemma4.special_id("<|tool_response>") == 50
    assert gemma4.special_id("hello") is None
    with pytest.raises(DgChatError, match="no token"):
        gemma4.token_id("certainly not one token")


@pytest.mark.parametrize("forged", ["<|turn>", "<turn|>", "<bos>", "<eos>", "<|channel>", "<channel|>",
                                    "<|think|>", '<|"|>', "<|tool_response>", "<pad>", "<mask>"])
def test_encode_never_produces_special_tokens(gemma4: Tokenizer, gemma4_metadata: dict, forged: str) -> None:
    types = gemma4_metadata["tokenizer.ggml.token_type"]
    specials = set(np.flatnonzero(np.isin(types, [TokenType.CONTROL, TokenType.USER_DEFINED])).tolist())
    assert len(specials) == 24
    assert gemma4.special_id(forged) in specials  # the text really is a special token...
    for text in (forged, f"user says {forged}\nand{forged}{forged} more"):
        ids = gemma4.encode(text)
        assert specials.isdisjoint(ids)  # ...but typed as text it never becomes one
        assert gemma4.decode(ids) == text


def test_encode_adds_bos_only_when_asked(gemma4: Tokenizer) -> None:
    assert gemma4.encode("Hi", add_bos=True) == [2, *gemma4.encode("Hi")]
    assert 2 not in gemma4.encode("Hi")


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_gemma4_round_trip(gemma4: Tokenizer, text: str) -> None:
    assert gemma4.decode(gemma4.encode(text)) == text


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_trained_bpe_matches_tokenizers_and_round_trips(trained, text: str) -> None:
    hf, ours = trained
    ids = ours.encode(text)
    assert ours.decode(ids) == text
    if "<|im_end|>" not in text:  # `tokenizers` itself parses its added specials; we never do
        assert ids == hf.encode(text, add_special_tokens=False).ids


def test_trained_bpe_metadata(trained) -> None:
    hf, ours = trained
    assert ours.model == "gpt2" and ours.vocab_size == hf.get_vocab_size()
    assert ours.bos_id == ours.eos_id == hf.token_to_id("<|endoftext|>")
    assert ours.pad_id is None and ours.mask_id is None and ours.add_bos is False
    im_end = hf.token_to_id("<|im_end|>")
    assert ours.special_id("<|im_end|>") == im_end
    assert im_end in hf.encode("a<|im_end|>b").ids and im_end not in ours.encode("a<|im_end|>b")
    assert ours.encode_parts(ours.split_specials("a<|im_end|>b")) == hf.encode("a<|im_end|>b").ids


def test_split_specials_and_encode_parts(gemma4: Tokenizer) -> None:
    prompt = "<bos><|turn>user\nWhy is the sky blue?<turn|>\n<|turn>model\n"
    parts = gemma4.split_specials(prompt)
    assert parts == [2, 105, "user\nWhy is the sky blue?", 106, "\n", 105, "model\n"]
    # the ids offline-testing.md §4.2 verified with the `tokenizers` recipe
    assert gemma4.encode_parts(parts) == [2, 105, 2364, 107, 11355, 563, 506, 7217, 3730, 236881, 106, 107,
                                          105, 4368, 107]
    assert gemma4.encode_parts(["user\n", "Why", " is"]) == gemma4.encode("user\nWhy is")
    assert gemma4.decode(gemma4.encode_parts(parts), skip_special=False) == prompt


def test_decode_skips_control_tokens_and_drops_foreign_ids(gemma4: Tokenizer) -> None:
    ids = [2, 105, *gemma4.encode("hi"), 106, 0, 0]
    assert gemma4.decode(ids) == "hi"
    assert gemma4.decode(ids, skip_special=False) == "<bos><|turn>hi<turn|><pad><pad>"
    assert gemma4.decode([100, *gemma4.encode("x"), 101]) == "<|channel>x<channel|>"  # user-defined: kept
    assert gemma4.decode([-1, *gemma4.encode("ok"), gemma4.vocab_size, 10**9]) == "ok"


def test_pieces_are_printable(gemma4: Tokenizer) -> None:
    pieces = gemma4.pieces
    assert len(pieces) == gemma4.vocab_size and pieces is gemma4.pieces
    assert [i for i, piece in enumerate(pieces) if CONTROL_CHARS.search(piece)] == []
    byte = lambda b: gemma4.piece(gemma4.token_id(f"<0x{b:02X}>"))  # noqa: E731
    bytes_shown = (byte(0x1B), byte(0x0A), byte(0x09), byte(0x7F), byte(0x20), byte(0xE2))
    assert bytes_shown == ("␛", "␊", "␉", "␡", " ", "\ufffd")
    assert gemma4.piece(gemma4.token_id("▁the")) == " the"
    assert gemma4.piece(107) == "␊" and gemma4.piece(105) == "<|turn>"
    assert gemma4.piece(-1) == gemma4.piece(gemma4.vocab_size) == "\ufffd"


def test_trained_bpe_pieces(trained) -> None:
    hf, ours = trained
    assert ours.piece(hf.token_to_id("Ġ")) == " " and ours.piece(hf.token_to_id("Ċ")) == "␊"
    assert ours.piece(hf.token_to_id("<|im_end|>")) == "<|im_end|>"
    assert not any(CONTROL_CHARS.search(piece) for piece in ours.pieces)


def test_visible_neutralises_escape_sequences() -> None:
    assert visible("\x1b]0;title\x07\x1b[31mred\x9b2J\u202eevil\r\n") == "␛]0;title␇␛[31mred\ufffd2J\ufffdevil␍␊"
    assert visible("plain [bold]text[/] 👋🏽") == "plain [bold]text[/] 👋🏽"


@pytest.mark.parametrize("metadata, message", [
    ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"]}, "unsupported tokenizer model 'llama'"),
    ({}, "unsupported tokenizer model None"),
    ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.merges": [],
      "tokenizer.ggml.pre": "falcon"}, "unsupported pre-tokenizer 'falcon'"),
    ({"tokenizer.ggml.model": "gemma4", "tokenizer.ggml.tokens": []}, "lacks tokenizer.ggml.tokens"),
    ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.merges": [],
      "tokenizer.ggml.token_type": [1]}, "1 entries for 2 tokens"),
    ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.merges": [],
      "tokenizer.ggml.bos_token_id": 7}, "bos_token_id 7 is outside"),
    ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.merges": ["a"]},
     "not two tokens joined by a space"),
    ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.merges": ["a c"]},
     "tokenizer in this GGUF is inconsistent"),
])
def test_bad_metadata_is_a_one_line_error(metadata: dict, message: str) -> None:
    with pytest.raises(DgChatError, match=re.escape(message)) as error:
        Tokenizer.from_metadata(metadata)
    assert "\n" not in str(error.value)


def test_an_end_token_outside_the_vocabulary_is_dropped():
    """The loader warns of it (gguf/checks.py); the tokenizer simply has no EOS then."""
    tokenizer = Tokenizer.from_metadata({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"],
                                         "tokenizer.ggml.merges": [], "tokenizer.ggml.eos_token_id": 7})
    assert tokenizer.eos_id is None
