"""The engines the front ends are given keep to `TurnEngine` (dg_chat/engine/turn_engine.py): the real
Engine and the TUI tests' scripted engine alike, so the fake cannot drift from what the app meets."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from dg_chat.config import SamplerSettings
from dg_chat.engine.backends.base import Backend
from dg_chat.engine.engine import Engine
from dg_chat.engine.events import Event
from dg_chat.engine.model_info import ModelInfo
from dg_chat.engine.turn_engine import BackendView, TokenPieces, TurnEngine
from dg_chat.text.chat import Message, PlainFormat
from tests.tui.fake_engine import FakeBackend, FakeTokenizer, ScriptedEngine


def members(protocol: type) -> dict[str, Any]:
    """The members a protocol declares: methods and properties by name."""
    return {name: value for name, value in vars(protocol).items()
            if not name.startswith("_") and (callable(value) or isinstance(value, property))}


def _parameters(function: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def drift(engine: object, protocol: type = TurnEngine) -> list[str]:
    """How `engine` departs from `protocol`: missing members, a method where a value is declared (or
    the reverse), and methods whose parameters differ in name, kind or default."""
    problems = []
    if not isinstance(engine, protocol):
        problems.append(f"not a {protocol.__name__}")
    for name, declared in members(protocol).items():
        if not hasattr(engine, name):
            problems.append(f"{name}: missing")
            continue
        ours = inspect.getattr_static(engine, name)
        if isinstance(declared, property):
            if inspect.isfunction(ours):
                problems.append(f"{name}: a method, declared a value")
        elif not inspect.isfunction(ours):
            problems.append(f"{name}: not a method")
        elif _parameters(ours) != _parameters(declared):
            problems.append(f"{name}: parameters {_parameters(ours)}, declared {_parameters(declared)}")
    return problems


def real_engine() -> Engine:
    """An Engine around fakes: its constructor only keeps what it is given."""
    fakes: Any = (FakeBackend(), FakeTokenizer(), PlainFormat(FakeTokenizer(), frozenset({1})))
    return Engine(*fakes, end_ids=frozenset({1}), name="tiny", file="/models/tiny.gguf", quant="Q8_0")


@pytest.mark.parametrize("make", [ScriptedEngine, real_engine], ids=["scripted", "engine"])
def test_the_engines_keep_to_the_protocol(make):
    engine = make()
    assert drift(engine) == []
    assert isinstance(engine.info, ModelInfo) and isinstance(engine.name, str)
    assert isinstance(engine.end_ids, frozenset)
    assert isinstance(engine.tokenizer, TokenPieces) and isinstance(engine.backend, BackendView)
    assert drift(engine.tokenizer, TokenPieces) == [] and drift(engine.backend, BackendView) == []


def test_every_backend_is_what_front_ends_read():
    """The Backend protocol declares every member of BackendView (so a backend is one)."""
    assert set(members(BackendView)) <= set(Backend.__annotations__)


class Drifted:
    """A fake engine as it could drift: no cancel, a name that became a method, no close."""

    end_ids = frozenset({0})
    thinks = False
    tokenizer = FakeTokenizer()
    backend = FakeBackend()

    def name(self) -> str:
        return "drifted"

    @property
    def info(self) -> ModelInfo:
        return ModelInfo("drifted", "", "", "torch", "cpu")

    def prompt_ids(self, messages: Sequence[Message], thinking: bool) -> list[int]:
        return []

    def context_use(self, messages: Sequence[Message], thinking: bool) -> None:
        return None

    def turn(self, messages: Sequence[Message], sampler: SamplerSettings) -> Iterator[Event]:
        yield from ()


def test_the_check_notices_a_drifted_fake():
    problems = drift(Drifted())
    assert problems[0] == "not a TurnEngine"
    assert [problem.split(":")[0] for problem in problems[1:]] == ["name", "turn", "close"]
    assert problems[1] == "name: a method, declared a value" and problems[-1] == "close: missing"
    assert "'cancel'" in problems[2]  # the parameter the drifted turn() lost


def _for_a_type_checker(scripted: ScriptedEngine, engine: Engine) -> list[TurnEngine]:
    """Never called: mypy/pyright check that both are TurnEngines where a front end takes one."""
    return [scripted, engine]


def test_a_prompt_far_over_the_context_is_refused_without_tokenizing_it(monkeypatch):
    from dg_chat import hub
    from dg_chat.config import Settings
    from dg_chat.engine.events import TurnFailed
    from dg_chat.engine.loader import load_engine

    engine = load_engine(Settings(model=str(hub.demo_file()), device="cpu"))
    assert isinstance(engine, Engine) and engine.backend.context_length == 4096

    def counted(*args, **kwargs):
        raise AssertionError("tokenized 10 MB: seconds of waiting for an answer known without it")

    with monkeypatch.context() as patched:
        patched.setattr(engine.tokenizer, "encode", counted)
        huge = [Message("user", "word " * 2_000_000)]
        use = engine.context_use(huge, False)
        assert not use.exact and not use.fits
        assert use.prompt == use.last_message == 666_667  # 9,999,999 characters, at most 15 per token
        assert use.problem == (f"the prompt has at least {use.prompt} tokens; with a 48-token canvas it "
                               "exceeds the model's context of 4096 tokens")
        assert list(engine.turn(huge, SamplerSettings())) == [TurnFailed(use.problem)]
    over = engine.context_use([Message("user", "word " * 5000)], False)  # a bound within the context: counted
    assert over.exact and over.prompt > 4096 and over.problem.startswith(f"the prompt has {over.prompt} tokens")


def test_a_model_file_rewritten_in_place_is_refused_and_one_replaced_touched_or_split_is_checked(tmp_path):
    import os
    import shutil

    from dg_chat import hub
    from dg_chat.config import Settings
    from dg_chat.engine.events import TurnFailed, TurnFinished
    from dg_chat.engine.loader import load_engine
    from tests.support.gguf_edit import split

    model = tmp_path / "demo.gguf"
    shutil.copy(hub.demo_file(), model)
    ask, sampler = [Message("user", "hi")], SamplerSettings(seed=1, max_canvases=1, max_steps=2)

    def rewritten(path):
        return [TurnFailed(f"the model file {path} was rewritten after it was loaded: restart dg-chat to load it "
                           "again")]

    replaced = load_engine(Settings(model=str(model), device="cpu"))
    os.replace(shutil.copy(hub.demo_file(), tmp_path / "new.gguf"), model)  # mv: the mapped file stays whole
    os.utime(model)  # and a touch changes nothing either
    assert isinstance(list(replaced.turn(ask, sampler))[-1], TurnFinished)

    engine = load_engine(Settings(model=str(model), device="cpu"))
    model.write_bytes(model.read_bytes()[:-64])  # in place, as cp or a converter writes: the mapping would fault
    assert list(engine.turn(ask, sampler)) == rewritten(model)

    first, second = split(hub.demo_file(), tmp_path / "parts" / "demo-00001-of-00002.gguf", 2)
    engine = load_engine(Settings(model=str(first), device="cpu"))
    second.write_bytes(second.read_bytes()[:-64])
    assert list(engine.turn(ask, sampler)) == rewritten(second)
