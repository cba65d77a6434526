"""The demo model's guide (models/demo-guide/*.toml, issue 14) stays well-formed and true to the app.

Every backticked span of every answer must name something that exists: a command line the real
CLI parses, a flag, a key bound in the app, a setting, an environment variable dg-chat reads, a
path dg-chat uses or a catalog model. Anything else fails, naming the topic and the span.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import os
import pkgutil
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.scripts import load_script

ROOT = Path(__file__).resolve().parent.parent


def _load() -> tuple[dict[str, dict], dict[str, str]]:
    """File name -> parsed TOML, and file name -> parse error (a file being written may be broken)."""
    data: dict[str, dict] = {}
    errors: dict[str, str] = {}
    for path in sorted((ROOT / "models" / "demo-guide").glob("*.toml")):
        try:
            data[path.name] = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            errors[path.name] = str(exc)
    return data, errors


FILES, PARSE_ERRORS = _load()
TOPICS: list[dict] = [topic for doc in FILES.values() for topic in doc.get("topic", [])]
OUTSIDE: dict = next((doc["outside"] for doc in FILES.values() if "outside" in doc), {})
PARAPHRASES: list[dict] = [p for doc in FILES.values() for p in doc.get("paraphrase", [])]
ANSWERS = [(t.get("id", "?"), t.get("answer", "")) for t in TOPICS] + [("outside", OUTSIDE.get("answer", ""))]
SPANS = [(topic_id, span) for topic_id, answer in ANSWERS for span in re.findall(r"`([^`]*)`", answer)]
STOPWORDS = set("a an the is are was were what whats s who how do does did i me my you your in on of to for and "
                "or it its can about with that this be will which some any please tell give".split())


def normalise(text: str) -> str:
    """Case- and punctuation-insensitive form of a question."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@dataclass
class Known:
    """Everything the guide may name, taken from the app itself."""

    parser: argparse.ArgumentParser
    flags: set[str]
    keys: set[str]
    settings: set[str]
    sections: set[str]
    env_vars: set[str]
    paths: set[str]
    models: dict[str, set[str]]  # catalog name -> quants


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and all its subparsers, recursively."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [parser] + [p for action in subs for sub in action.choices.values() for p in _parsers(sub)]


def _bound_keys() -> set[str]:
    """Every key of a Binding in dg_chat.tui, plus the textual App's own (ctrl+q, command palette)."""
    from textual.app import App

    import dg_chat.tui

    keys: set[str] = set()
    for info in pkgutil.walk_packages(dg_chat.tui.__path__, "dg_chat.tui."):
        module = vars(importlib.import_module(info.name))
        for cls in [c for c in module.values() if inspect.isclass(c) and c.__module__.startswith("dg_chat.")]:
            for owner in cls.__mro__:
                if owner is App or owner.__module__.startswith("dg_chat."):
                    for binding in vars(owner).get("BINDINGS", []):
                        key = binding.key if hasattr(binding, "key") else binding[0]
                        keys |= {k.strip() for k in key.split(",")}
            if issubclass(cls, App) and cls.ENABLE_COMMAND_PALETTE:
                keys.add(cls.COMMAND_PALETTE_BINDING)
    return keys


def _home_paths(home: Path) -> set[str]:
    """dg-chat's paths under default XDG dirs, written with ~ as the guide writes them."""
    from dg_chat import paths
    from dg_chat.export import default_export_dir

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        for var in [v for v in os.environ if v.startswith(("XDG_", "DG_CHAT_"))]:
            mp.delenv(var)
        found = [paths.config_file(), paths.history_db(), paths.config_dir(), paths.data_dir(),
                 paths.cache_dir(), default_export_dir(), home / ".cache" / "huggingface" / "hub"]
    return {"~/" + str(path.relative_to(home)) for path in found}


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> Known:
    from dg_chat import config, hub
    from dg_chat.cli import build_parser

    parser = build_parser()
    flags = {option for p in _parsers(parser) for action in p._actions for option in action.option_strings}
    sections = {"sampler": config.SamplerSettings, "ui": config.UISettings}
    fields = {name: dataclasses.fields(cls) for name, cls in [*sections.items(), ("", config.Settings)]}
    settings = {f.name for group in fields.values() for f in group} - set(sections)
    tables = set(sections) | {f"{s}.{f.name}" for s in sections for f in fields[s] if str(f.type).startswith("dict")}
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "dg_chat").rglob("*.py"))
    env_vars = set(re.findall(r"\b(?:DG_CHAT|HF|TRITON|CUDA)_[A-Z0-9_]*[A-Z0-9]\b", source))
    env_vars |= {f"DG_CHAT_{name.upper()}" for name, (_, f) in config.LEAVES.items()
                 if not str(f.type).startswith("dict")}  # read by config._load_env
    models = {m.name: set(m.quants) for m in hub.load_catalog().values()} | {"demo": set()}
    home_paths = _home_paths(tmp_path_factory.mktemp("home"))
    return Known(parser, flags, _bound_keys(), settings, tables, env_vars, home_paths, models)


KEY = re.compile(r"((Ctrl|Shift|Alt)\+)*(F\d{1,2}|Escape|Enter|Space|Tab|Backspace|Delete|Left|Right|Up|Down)"
                 r"|((Ctrl|Shift|Alt)\+)+[A-Za-z]|[a-z?]")


def _model_problem(spec: str, pull: bool = False) -> str | None:
    """What is wrong with a model given to -m or `models pull/rm/info` (None: it exists)."""
    from dg_chat import hub
    from dg_chat.errors import DgChatError

    if spec.lower() == "demo" or (not pull and spec.endswith(".gguf")):
        return "the demo model is not downloaded" if pull else None
    try:
        model, quant = hub.parse_spec(spec)
    except DgChatError as exc:
        return str(exc)
    return f"{spec} cannot be pulled (split files)" if pull and quant not in (None, *model.downloadable()) else None


def _command_problem(span: str, known: Known) -> str | None:
    try:
        args = known.parser.parse_args(shlex.split(span)[1:])
    except SystemExit as exit_:  # --help and --version exit 0
        return None if exit_.code == 0 else f"the CLI rejects it (exit {exit_.code})"
    if getattr(args, "model", None):
        return _model_problem(args.model)
    if getattr(args, "models_command", None) in ("pull", "rm", "info"):
        return _model_problem(args.name, pull=args.models_command == "pull")
    return None


def span_problem(span: str, known: Known) -> str | None:
    """None if the span names something real, else what is wrong with it."""
    if span.startswith("dg-chat"):
        return _command_problem(span, known)
    if span.startswith("-"):
        return None if span in known.flags else "no command has this option"
    if span.startswith("~/"):
        return None if span.rstrip("/") in known.paths else "not a path dg-chat uses"
    if span.startswith("["):
        return None if span.strip("[]") in known.sections else "not a section of the config file"
    if KEY.fullmatch(span):  # as Textual names it: `Ctrl+R` -> ctrl+r, `?` -> question_mark, `c` -> c
        key = "question_mark" if span == "?" else span if len(span) == 1 else span.lower()
        return None if key in known.keys else f"{key} is not bound in the app"
    if span in known.settings or span in known.models or any(span in q for q in known.models.values()):
        return None
    name, _, quant = span.partition(":")
    if quant and name in known.models:
        return None if quant in known.models[name] else f"{name} has no quant {quant}"
    if re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+", span):
        return None if span in known.env_vars else "dg-chat does not read this environment variable"
    return "not a command, flag, key, setting, variable, path or model of dg-chat"


@pytest.mark.parametrize(("topic_id", "span"), SPANS, ids=[f"{t}:{s}" for t, s in SPANS])
def test_span_is_real(topic_id: str, span: str, known: Known) -> None:
    problem = span_problem(span, known)
    assert problem is None, f"topic {topic_id!r}: `{span}`: {problem}"


@pytest.mark.parametrize("span", [
    "Ctrl+Z", "F9", "Esc", "x", "--frobnicate", "-z", "dg-chat fly", "dg-chat ask --frobnicate",
    "dg-chat models pull gpt5", "dg-chat models pull diffusiongemma:BF16", "dg-chat -m dream:Q2_K",
    "no_such_setting", "[colors]", "DG_CHAT_NO_SUCH", "EXIT_ERROR", "~/.dg-chat", "diffusiongemma:Q3_K", "canvas"])
def test_made_up_span_is_rejected(span: str, known: Known) -> None:
    assert span_problem(span, known) is not None


@pytest.mark.parametrize("span", [
    "Ctrl+Q", "?", "Shift+Enter", "max_steps", "[ui.keymap]", "DG_CHAT_MAX_STEPS", "~/.cache/huggingface/hub",
    "HF_HUB_OFFLINE", "Q8_0", "dream:Q6_K", 'dg-chat ask "hi" --seed 7 -m diffusiongemma:Q4_K_M'])
def test_real_span_is_accepted(span: str, known: Known) -> None:
    assert span_problem(span, known) is None


def test_files_parse() -> None:
    assert not PARSE_ERRORS


def test_topic_ids_are_unique() -> None:
    ids = [topic.get("id") for topic in TOPICS]
    assert all(isinstance(i, str) and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", i) for i in ids), ids
    assert not {i for i in ids if ids.count(i) > 1}


@pytest.mark.parametrize("topic", TOPICS, ids=[t.get("id", "?") for t in TOPICS])
def test_topic_shape(topic: dict) -> None:
    assert 12 <= len(topic["questions"]) <= 14, f"{len(topic['questions'])} questions"
    assert 40 <= len(topic["answer"].split()) <= 120, f"{len(topic['answer'].split())} words"


def test_questions_are_unique() -> None:
    owners: dict[str, list[str]] = {}
    for topic in TOPICS:
        for question in topic["questions"]:
            owners.setdefault(normalise(question), []).append(topic["id"])
    for part in ("train", "eval"):
        for prompt in OUTSIDE.get(part, []):
            owners.setdefault(normalise(prompt), []).append(f"outside.{part}")
    assert not {q: where for q, where in owners.items() if len(where) > 1}


def test_outside_prompts() -> None:
    assert OUTSIDE, "no file has an [outside] table"
    train, held_out = OUTSIDE["train"], OUTSIDE["eval"]
    assert len(train) >= 400 and len(held_out) == 20
    assert "`dg-chat models pull diffusiongemma`" in OUTSIDE["answer"]  # says how to get the real model
    assert not [p for p in train + held_out if not 2 <= len(p.split()) <= 30]
    content = [set(normalise(p).split()) - STOPWORDS for p in train]
    for prompt in held_out:  # held out: no train prompt holds 3/4 of its content words
        mine = set(normalise(prompt).split()) - STOPWORDS
        close = [p for p, words in zip(train, content, strict=True) if len(mine & words) >= 0.75 * len(mine)]
        assert not close, f"eval {prompt!r} is close to train {close}"


def test_every_topic_has_one_held_out_paraphrase_of_its_own_question() -> None:
    questions = {topic["id"]: topic["questions"] for topic in TOPICS}
    assert sorted(p["topic"] for p in PARAPHRASES) == sorted(questions)
    assert not [p for p in PARAPHRASES if p["of"] not in questions[p["topic"]]]
    assert not [p for p in PARAPHRASES if not 3 <= len(p["text"].split()) <= 20]


def test_held_out_paraphrases_are_never_trained_on() -> None:
    """Not a hand-written question or outside prompt, nor one of the generated variants the
    training script trains on (case, punctuation, greetings, synonyms)."""
    demo_guide = load_script("demo_guide")
    guide = demo_guide.load()
    split = demo_guide.split(guide)
    trained = {normalise(question) for question, _ in demo_guide.paraphrases(split.train)}
    assert len(split.held_out) == demo_guide.EVAL_TOPICS
    assert not [p.text for p in guide.held_out if normalise(p.text) in trained]
    assert not [p.text for p in guide.held_out if normalise(p.text) == normalise(p.of)]
