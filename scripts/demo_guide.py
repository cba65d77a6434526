"""dg-chat's guide: the demo model's training set, read from models/demo-guide/*.toml.

Each file holds `[[topic]]` tables (`id`, 12-14 hand-written `questions`, one `answer`); outside.toml
also holds `[outside]`: the answer to every question outside the guide's domain, with `train` and
held-out `eval` prompts; eval.toml holds one hand-written `[[paraphrase]]` per topic, a rewording
of one of its questions that is never trained on. `split()` picks EVAL_TOPICS of those paraphrases
for the quality check (issue 14: "held-out paraphrases of trained questions"), and `paraphrases()`
multiplies every hand-written question with seeded surface variations (case, punctuation,
greetings, synonyms), so the model keys on what is asked, not on how it is typed. Everything here
is plain Python: no torch, no tokenizer.
"""

from __future__ import annotations

import random
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "models" / "demo-guide"
EVAL_TOPICS = 40
VARIANTS = 3  # generated paraphrases per hand-written question

PREFIXES = ["", "", "", "hi, ", "hey ", "quick question: ", "please tell me: ", "so ", "ok, ", "hello! ",
            "one more thing: ", "i wonder, "]
SUFFIXES = ["", "", "", " please", " thanks", "?", "??", " :)", " - thank you"]
SYNONYMS = [  # (word, replacements), whole words, lower case
    ("answer", ["reply", "response"]), ("answers", ["replies", "responses"]),
    ("model", ["llm", "ai"]), ("chat", ["conversation"]), ("chats", ["conversations"]),
    ("how do i", ["how can i", "how to", "how would i"]), ("what is", ["what's", "whats"]),
    ("can i", ["is it possible to", "could i"]), ("the app", ["dg-chat", "the program"]),
    ("gpu", ["graphics card", "video card"]), ("key", ["shortcut", "keyboard shortcut"]),
    ("change", ["adjust", "set"]), ("show", ["display"]), ("delete", ["remove"]),
]


@dataclass(frozen=True)
class Topic:
    id: str
    questions: tuple[str, ...]
    answer: str


@dataclass(frozen=True)
class Paraphrase:
    """A held-out rewording (`text`) of the hand-written question `of` of topic `topic`."""
    topic: str
    of: str
    text: str


@dataclass(frozen=True)
class Guide:
    topics: tuple[Topic, ...]
    outside_answer: str
    outside_train: tuple[str, ...]
    outside_eval: tuple[str, ...]
    held_out: tuple[Paraphrase, ...]
    """eval.toml: one paraphrase per topic, never trained on."""


@dataclass(frozen=True)
class Split:
    train: tuple[tuple[str, str], ...]
    """(question, answer): every hand-written question, and the outside prompts."""
    held_out: tuple[tuple[str, str], ...]
    """(paraphrase, answer): the held-out paraphrases of EVAL_TOPICS topics."""
    outside_eval: tuple[str, ...]


def answer_text(answer: str) -> str:
    """A TOML answer as the model says it: lines joined, paragraphs kept, edges trimmed."""
    paragraphs = re.split(r"\n\s*\n", answer.strip())
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def load(folder: Path = GUIDE) -> Guide:
    topics: list[Topic] = []
    outside: dict = {}
    held_out: list[Paraphrase] = []
    for path in sorted(folder.glob("*.toml")):
        data = tomllib.loads(path.read_text())
        topics += [Topic(t["id"], tuple(t["questions"]), answer_text(t["answer"])) for t in data.get("topic", [])]
        outside = data.get("outside", outside)
        held_out += [Paraphrase(p["topic"], p["of"], p["text"]) for p in data.get("paraphrase", [])]
    return Guide(tuple(topics), answer_text(outside["answer"]), tuple(outside["train"]), tuple(outside["eval"]),
                 tuple(held_out))


def split(guide: Guide, seed: int = 0) -> Split:
    """Train on every hand-written question; hold out the paraphrases of EVAL_TOPICS topics (seeded)."""
    answers = {topic.id: topic.answer for topic in guide.topics}
    picked = random.Random(seed).sample(guide.held_out, min(EVAL_TOPICS, len(guide.held_out)))
    train = [(q, topic.answer) for topic in guide.topics for q in topic.questions]
    train += [(q, guide.outside_answer) for q in guide.outside_train]
    return Split(tuple(train), tuple((p.text, answers[p.topic]) for p in picked), guide.outside_eval)


def vary(question: str, rng: random.Random) -> str:
    """One surface paraphrase: a synonym swap, a greeting or a tail, lower case or no question mark."""
    text = question
    lowered = text.lower()
    swaps = [(word, options) for word, options in SYNONYMS if re.search(rf"\b{re.escape(word)}\b", lowered)]
    if swaps and rng.random() < 0.7:
        word, options = rng.choice(swaps)
        text = re.sub(rf"\b{re.escape(word)}\b", rng.choice(options), lowered, count=1)
    if rng.random() < 0.5:
        text = text.lower()
    if rng.random() < 0.3:
        text = text.rstrip("?!. ")
    return (rng.choice(PREFIXES) + text + rng.choice(SUFFIXES)).strip()


def paraphrases(pairs: tuple[tuple[str, str], ...], seed: int = 0, variants: int = VARIANTS) -> list[tuple[str, str]]:
    """Each (question, answer) pair as written plus `variants` distinct generated paraphrases."""
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    for question, answer in pairs:
        seen = {question}
        out.append((question, answer))
        for _ in range(variants * 3):
            if len(seen) > variants:
                break
            text = vary(question, rng)
            if text not in seen:
                seen.add(text)
                out.append((text, answer))
    return out
