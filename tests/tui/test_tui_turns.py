"""Turn control without a running app: the worker body (`run_turn`) against the scripted engine, its
messages dispatched by `Turns.show` to stand-ins for the canvas, the status bar and the answer's view."""

from __future__ import annotations

from dg_chat.config import SamplerSettings, Settings
from dg_chat.engine.events import BlockCommitted, PromptEncoded, Stats, TurnFailed, TurnFinished
from dg_chat.text.chat import Message
from dg_chat.tui.turns import TurnEvent, Turns, run_turn
from dg_chat.tui.widgets.canvas import CanvasFrame
from tests.tui.fake_engine import ScriptedEngine

LONG = "The quick brown fox jumps over the lazy dog. " * 10


class Canvas:
    """What a turn's events do to the canvas."""

    def __init__(self) -> None:
        self.painted = None
        self.display = True
        self.calls: list[tuple] = []

    def wait_for_block(self, block: int) -> None:
        self.calls.append(("wait_for_block", block))

    def flush(self) -> None:
        self.calls.append(("flush",))

    def finish_block(self, block: int) -> None:
        self.calls.append(("finish_block", block))

    def stop(self) -> None:
        self.calls.append(("stop",))


class Status:
    def __init__(self) -> None:
        self.fields: dict = {}
        self.ends: list[str] = []

    def set(self, **fields) -> None:
        self.fields.update(fields)

    def end_turn(self, state: str, **fields) -> None:
        self.ends.append(state)
        self.fields.update(fields, state=state)


class View:
    """The answer's view: the texts shown as blocks commit, and how it finished."""

    def __init__(self) -> None:
        self.thinking = self.content = ""
        self.committed: list[str] = []
        self.finished: tuple | None = None

    async def show_committed(self, thinking: str, answer: str) -> None:
        self.thinking, self.content = thinking, answer
        self.committed.append(answer)

    async def finish(self, thinking: str, answer: str, status: str, error: str = "", stats: dict | None = None) -> None:
        self.finished = (answer, status, error, stats)


class Notices:
    def __init__(self) -> None:
        self.notices: list[tuple[str, str]] = []

    def notify(self, message: str, *, title: str = "", **options) -> None:
        self.notices.append((message, title))


def run(store, engine):
    """Start a turn as the app does and run its worker body here; what it sent to the canvas and to the app."""
    chat = store.create_chat("t", Settings())
    message_id = store.add_message(chat, "model", "", status="partial")
    turns, view = Turns(), View()
    turn = turns.start(message_id, view)
    frames: list[CanvasFrame] = []
    posted: list[TurnEvent] = []
    run_turn(store, turn, engine, [Message("user", "tell me about foxes")], SamplerSettings(),
             to_canvas=frames.append, to_ui=posted.append)
    assert turn.done.is_set()  # the worker has left the engine
    return turns, turn, frames, posted


async def show_all(turns, posted):
    canvas, status, notices = Canvas(), Status(), Notices()
    for message in posted:
        await turns.show(message, canvas, status, notices)
    return canvas, status, notices


async def test_a_turn_is_stored_and_shown_event_by_event(store):
    turns, turn, frames, posted = run(store, ScriptedEngine(lambda m: LONG))
    assert len(frames) == 12 and {frame.turn for frame in frames} == {turn.id}  # 2 blocks of 6 steps
    assert [(f.frame.block, f.frame.step) for f in frames][:2] == [(0, 1), (0, 2)]
    assert [type(m.event) for m in posted] == [PromptEncoded, BlockCommitted, BlockCommitted, TurnFinished]
    assert {m.turn for m in posted} == {turn.id}
    stored = store.messages(store.chats()[0].id)[-1]
    assert (stored.content, stored.status) == (LONG, "complete")  # by the worker, before the UI saw anything

    canvas, status, notices = await show_all(turns, posted)
    view = turn.view
    assert view.committed[-1] == LONG and 0 < len(view.committed[0]) < len(LONG)
    assert view.finished[:3] == (LONG, "complete", "") and view.finished[3]["tokens"] == 92
    assert canvas.calls == [("wait_for_block", 0), ("flush",), ("finish_block", 0), ("wait_for_block", 1),
                            ("flush",), ("finish_block", 1), ("stop",)]  # no frame was painted here
    assert not canvas.display
    assert status.ends == ["ready"] and status.fields["prompt_tokens"] and status.fields["steps_per_block"] == 6
    assert notices.notices == [] and turns.current is None  # the result ends the turn


async def test_a_stopped_turn_keeps_what_it_had():
    turns = Turns()
    view = View()
    turn = turns.start(1, view)
    assert turns.stop() and turn.cancel.is_set()
    stopped = TurnFinished("so far", "", [], Stats(prompt_tokens=3, tokens=2, steps=[4], seconds=0.5), stopped=True)
    _, status, _ = await show_all(turns, [TurnEvent(turn.id, stopped)])
    assert view.finished[:2] == ("so far", "stopped") and status.ends == ["stopped"]
    assert turns.current is None and not turns.stop()


async def test_an_engine_failure_and_an_engine_crash_end_the_turn_as_failed(store):
    for engine, error in ((ScriptedEngine(fail_in_block=0), "CUDA out of memory"),
                          (ScriptedEngine(crash_in_block=0), "RuntimeError: fake engine crashed")):
        turns, turn, _, posted = run(store, engine)
        assert [type(m.event) for m in posted] == [PromptEncoded, TurnFailed]
        _, status, notices = await show_all(turns, posted)
        assert turn.view.finished[1] == "failed" and turn.view.finished[2].startswith(error)
        assert notices.notices == [(posted[-1].event.error, "The answer failed")] and status.ends == ["ready"]
        stored = store.messages(store.chats()[0].id)[-1]
        assert stored.status == "failed" and stored.error.startswith(error)


async def test_a_turn_whose_failure_cannot_be_stored_still_ends(store, monkeypatch, caplog):
    """An answer the history refuses (here: every update raises what SQLite raises for a lone surrogate)
    must still end the turn, or the app would wait for it for good."""
    def refuse(*args, **kwargs):
        raise UnicodeEncodeError("utf-8", "\ud83d", 0, 1, "surrogates not allowed")

    monkeypatch.setattr(store, "update_message", refuse)
    turns, turn, _, posted = run(store, ScriptedEngine())
    assert isinstance(posted[-1].event, TurnFailed) and "UnicodeEncodeError" in posted[-1].event.error
    assert "could not store a failed turn" in caplog.text
    _, status, _ = await show_all(turns, posted)
    assert turn.view.finished[1] == "failed" and status.ends == ["ready"] and turns.current is None


async def test_events_of_a_turn_left_behind_touch_no_view(store):
    turns, turn, _, posted = run(store, ScriptedEngine())
    late = TurnEvent(turn.id - 1, posted[0].event)  # an earlier turn's event: dropped
    assert turns.detach() and turn.cancel.is_set()
    canvas, status, notices = await show_all(turns, [late, *posted])
    assert turn.view.committed == [] and turn.view.finished is None and canvas.calls == []
    assert status.ends == ["ready"] and [n for n, _ in notices.notices] == [
        "The answer of the chat you left was stopped; what it had so far is kept."]
    assert turns.current is None
