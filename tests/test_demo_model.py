"""The shipped demo model, models/demo.gguf: dg-chat's own guide, run by dg-chat's engine with the
default sampler (figures also in models/demo.md and `scripts/bench.py demo`).

It is asked 40 held-out paraphrases of trained questions (models/demo-guide/eval.toml: hand-written,
never trained on) and the 20 held-out out-of-domain prompts of models/demo-guide/outside.toml,
each with 3 seeds.
"Intended answer" means word-level F1 >= 0.7 against the topic's answer (scripts/train_demo.py
`f1`); "dictionary words" are the words of the guide's answers (models/demo-words.txt.gz).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dg_chat import hub, paths
from dg_chat.cli import main
from dg_chat.config import Settings
from dg_chat.gguf.reader import open_gguf
from tests.support.scripts import load_script

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "demo.gguf"
WORDS = ROOT / "models" / "demo-words.txt.gz"


train_demo = load_script("train_demo")
demo_guide = load_script("demo_guide")


@pytest.fixture(scope="module")
def quality():
    torch.set_num_threads(1)
    return train_demo.evaluate(DEMO, WORDS, demo_guide.split(demo_guide.load()))


def test_the_demo_file_is_a_small_diffusion_gemma() -> None:
    assert DEMO.stat().st_size <= 40 * 10**6
    with open_gguf(DEMO) as f:
        meta = f.metadata
        assert f.architecture == "diffusion-gemma"
        assert meta["diffusion.canvas_length"] == train_demo.CANVAS
        pattern = list(meta["diffusion-gemma.attention.sliding_window_pattern"])
        assert True in pattern and False in pattern  # sliding and full-attention layers
        assert meta["diffusion-gemma.expert_count"] > meta["diffusion-gemma.expert_used_count"] >= 2
        assert meta["tokenizer.ggml.model"] == "gpt2" and len(meta["tokenizer.ggml.tokens"]) == train_demo.VOCAB_SIZE
        assert meta["tokenizer.chat_template"] == train_demo.CHAT_TEMPLATE


def test_held_out_questions_are_answered_on_their_topic(quality) -> None:
    # Floors under what the shipped file measured (models/demo.md: mean F1 0.78, 68% of answers
    # at F1 >= 0.7): a retrained file must not be worse. Issue 14's goal, 80% at F1 >= 0.7, is
    # not reached by 51 CPU-minutes of training yet.
    figures = quality.figures()
    assert len(quality.in_domain) == 3 * demo_guide.EVAL_TOPICS
    assert figures["in_domain_empty"] == 0, quality.summary()
    assert figures["in_domain_mean_f1"] >= 0.74, quality.summary()
    assert figures["in_domain_intended"] >= 0.6, quality.summary()


def test_outside_its_domain_it_says_what_it_is(quality) -> None:
    figures = quality.figures()
    assert len(quality.outside) == 3 * 20
    assert figures["outside_empty"] == 0, quality.summary()
    assert figures["outside_demo_answer"] >= 0.9, quality.summary()


def test_answers_are_dictionary_words_over_several_canvases(quality) -> None:
    figures = quality.figures()
    assert figures["dictionary_words"] >= 0.95, quality.summary()
    assert figures["in_domain_two_canvases_or_more"] >= 0.4, quality.summary()


def test_the_quality_measures_can_fail() -> None:
    answer = demo_guide.load().topics[0].answer
    assert train_demo.f1(answer, answer) == 1.0
    assert train_demo.f1("Press Escape to stop.", answer) < train_demo.GOOD_F1
    assert train_demo.f1("", answer) == 0.0
    known = train_demo.read_word_list(WORDS)
    assert {"canvas", "denoising", "entropy"} <= known
    assert not {"thee", "xqzt", "pizza"} & known


def test_the_demo_is_the_default_model() -> None:
    assert hub.resolve_model("", Settings()) == hub.resolve_model("demo", Settings()) == DEMO
    assert paths.repo_models_dir() / "demo.gguf" == DEMO


def test_ask_demo_answers(capsys) -> None:
    assert main(["ask", "What is a canvas?", "--demo", "--seed", "1", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["backend"] == "torch" and answer["text"].strip()
    assert answer["stats"]["blocks"] >= 1 and answer["stats"]["steps_per_block"] < 48
