"""The shipped demo model, models/demo.gguf, run by dg-chat's own engine with the default sampler.

Quality figures (also in models/demo.md): for 20 fixed prompts, all with the same seed, the
answers are made of words of the training text, adaptive stopping ends most blocks before the
step limit, and different prompts get different answers. "Word" is defined by
scripts/train_demo.py `words()`; the training text's word list ships as models/demo-words.txt.gz.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dg_chat import hub, paths
from dg_chat.cli import main
from dg_chat.config import Settings
from dg_chat.gguf.reader import open_gguf
from tests.support.scripts import load_script

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "demo.gguf"
WORDS = ROOT / "models" / "demo-words.txt.gz"


train_demo = load_script("train_demo")


@pytest.fixture(scope="module")
def quality():
    return train_demo.evaluate(DEMO, WORDS)


def test_the_demo_file_is_a_small_diffusion_gemma() -> None:
    assert DEMO.stat().st_size <= 25 * 10**6
    with open_gguf(DEMO) as f:
        meta = f.metadata
        assert f.architecture == "diffusion-gemma"
        assert meta["diffusion.canvas_length"] == train_demo.CANVAS
        pattern = list(meta["diffusion-gemma.attention.sliding_window_pattern"])
        assert True in pattern and False in pattern  # sliding and full-attention layers
        assert meta["diffusion-gemma.expert_count"] > meta["diffusion-gemma.expert_used_count"] >= 2
        assert meta["tokenizer.ggml.model"] == "gpt2" and len(meta["tokenizer.ggml.tokens"]) == train_demo.VOCAB_SIZE
        assert meta["tokenizer.chat_template"] == train_demo.CHAT_TEMPLATE


def test_answers_are_words_of_the_training_text(quality) -> None:
    assert all(answer.strip() for answer in quality.answers)
    assert quality.words >= 5 * len(train_demo.PROMPTS)  # answers, not single tokens
    assert quality.word_share >= 0.8, quality.summary()


def test_adaptive_stopping_ends_most_blocks_early(quality) -> None:
    assert quality.early_stop_share >= 0.75, quality.summary()


def test_answers_change_with_the_prompt(quality) -> None:
    # every prompt used the same seed, so only the prompt can make the answers differ
    assert len(set(quality.answers)) >= 0.9 * len(train_demo.PROMPTS), quality.answers


def test_the_word_check_can_fail() -> None:
    known = train_demo.read_word_list(WORDS)
    assert {"thee", "lord", "o'er", "tis"} <= known
    assert not {"computer", "internet", "xqzt"} & known


def test_the_demo_is_the_default_model() -> None:
    assert hub.resolve_model("", Settings()) == hub.resolve_model("demo", Settings()) == DEMO
    assert paths.repo_models_dir() / "demo.gguf" == DEMO


def test_ask_demo_answers(capsys) -> None:
    assert main(["ask", "Who's there?", "--demo", "--seed", "1", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["backend"] == "torch" and answer["text"].strip()
    assert answer["stats"]["blocks"] >= 1 and answer["stats"]["steps_per_block"] < 48
