"""The remote backend (openai:<base-url>#<model>) against a real HTTP server on 127.0.0.1: a small
vLLM-style fake that streams one chunk per canvas (and dg-chat's canvas events when asked), and fails
on demand. `dg-chat ask`, `dg-chat doctor` and the engine's event stream; every error is one line;
the API key never shows."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from dg_chat.cli import main
from dg_chat.commands.ask import AnswerStream, canvas_text
from dg_chat.config import SamplerSettings, Settings
from dg_chat.engine.events import (
    BlockCommitted,
    CanvasStep,
    PromptEncoded,
    TurnFinished,
)
from dg_chat.engine.loader import load_engine
from dg_chat.engine.remote import client as client_module
from dg_chat.engine.remote.client import RemoteClient, RemoteError
from dg_chat.engine.remote.engine import RemoteEngine
from dg_chat.engine.remote.spec import parse_remote
from dg_chat.engine.turn_engine import BackendView, TokenPieces, TurnEngine
from dg_chat.errors import DgChatError
from dg_chat.text.canvas import END_GLYPH
from dg_chat.text.chat import Message
from tests.support.fake_openai import MODEL, FakeOpenAI, Reply

KEY = "sk-test-5f1c0ffee0ddba11"


@pytest.fixture
def keyed(monkeypatch):
    """A server that wants KEY, and KEY in OPENAI_API_KEY."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = FakeOpenAI(key=KEY)
    yield server
    server.close()


def engine_for(spec: str) -> RemoteEngine:
    engine = load_engine(Settings(model=spec))
    assert isinstance(engine, RemoteEngine)
    return engine


def turn(engine: RemoteEngine, sampler: SamplerSettings | None = None, cancel: threading.Event | None = None):
    return list(engine.turn([Message("user", "Why is the sky blue?")], sampler or SamplerSettings(seed=4), cancel))


def error_line(err: str) -> str:
    """The one line of an error on stderr."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("dg-chat: error: ")
    return lines[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# the spec


def test_a_spec_names_the_base_url_and_the_model_and_never_a_password():
    spec = parse_remote("openai:https://llm.example.com:8443/v1/#org/model")
    assert (spec.base_url, spec.model, spec.host) == ("https://llm.example.com:8443/v1", "org/model",
                                                      "llm.example.com:8443")
    assert spec.label() == "openai:https://llm.example.com:8443/v1#org/model"
    with pytest.raises(DgChatError, match="openai:<base-url>#<model>"):
        parse_remote("openai:localhost:8000#m")
    with pytest.raises(DgChatError, match="must not hold a user or password"):
        parse_remote("openai:https://me:secret@llm.example.com/v1#m")


# the turn


def test_each_chunk_is_a_block_and_each_canvas_event_a_step_with_its_pieces(server):
    engine = engine_for(server.spec())
    events = turn(engine)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["PromptEncoded", *["CanvasStep"] * 3, "BlockCommitted", *["CanvasStep"] * 3, "BlockCommitted",
                     "TurnFinished"]
    steps = [e for e in events if isinstance(e, CanvasStep)]
    assert [(s.block, s.step, s.max_steps) for s in steps] == [(b, s, 3) for b in (0, 1) for s in (1, 2, 3)]
    last = steps[2]
    assert [engine.tokenizer.piece(n) for n in last.tokens[:3]] == ["The ", "sky ", "is "] and last.accepted.all()
    assert not steps[0].accepted.all() and steps[0].changed.all()
    drawn = canvas_text(last, engine).plain  # what `ask --show-steps` draws
    assert "The sky is" in drawn and "<pad>" not in drawn and drawn.endswith(END_GLYPH)  # the end: a quiet cell
    blocks = [e for e in events if isinstance(e, BlockCommitted)]
    assert [b.answer for b in blocks] == ["The sky is ", "The sky is blue."]
    assert [b.final for b in blocks] == [False, True]
    finished = events[-1]
    assert finished.answer == "The sky is blue." and not finished.stopped
    stats = finished.stats
    assert (stats.prompt_tokens, stats.tokens, stats.steps, stats.seed) == (12, 9, [3, 3], 4)
    assert stats.seed_confirmed  # the chunks carry dg-chat's extension: its server uses the seed
    assert 0 < stats.prompt_seconds <= stats.first_block_seconds and stats.tokens_per_second > 0
    body = server.requests[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True} and body["seed"] == 4
    assert body["model"] == MODEL and body["messages"] == [{"role": "user", "content": "Why is the sky blue?"}]
    assert body["dg_chat"]["canvas"] is True and body["dg_chat"]["sampler"]["max_steps"] == 48
    engine.close()


def test_events_of_other_kinds_are_skipped_and_half_an_emoji_is_a_replacement_character():
    # a keep-alive whose data is not JSON; an emoji whose UTF-16 halves come in two chunks as "\\ud83d" escapes
    server = FakeOpenAI(reply=Reply(blocks=[("", "smile \ud83d"), ("", "\ude00!")], pings=True))
    try:
        engine = engine_for(server.spec())
        events = turn(engine)
    finally:
        server.close()
    assert [e.answer for e in events if isinstance(e, BlockCommitted)] == ["smile \ufffd", "smile \ufffd\ufffd!"]
    assert events[-1].answer == "smile \ufffd\ufffd!"
    pieces = {engine.tokenizer.piece(n) for e in events if isinstance(e, CanvasStep) for n in e.tokens}
    assert "\ufffd " in pieces and not any("\ud800" <= c <= "\udfff" for piece in pieces for c in piece)
    engine.close()


def test_without_canvas_events_blocks_arrive_whole_with_thinking_from_reasoning_content():
    server = FakeOpenAI(reply=Reply(blocks=[("Light scatters. ", ""), ("", "Blue light "), ("", "scatters most.")],
                                    canvas=False))
    try:
        engine = engine_for(server.spec())
        events = turn(engine, SamplerSettings(seed=1, thinking=True, max_canvases=3))
    finally:
        server.close()
    assert [type(e) for e in events] == [PromptEncoded, BlockCommitted, BlockCommitted, BlockCommitted, TurnFinished]
    assert events[0].n_tokens is None  # the server tokenizes the prompt (a TUI status shows no "prompt 0 tok")
    finished = events[-1]
    assert (finished.thinking, finished.answer) == ("Light scatters. ", "Blue light scatters most.")
    assert finished.stats.steps == [3, 3, 3]  # from the chunks' dg_chat extension
    body = server.requests[-1]
    assert body["chat_template_kwargs"] == {"enable_thinking": True} and body["dg_chat"]["sampler"]["max_canvases"] == 3


PLAIN = Reply(canvas=False, extension=False, usage=None)
"""A server that streams plain chunks and no usage (no token counts, nothing to say the seed was used)."""


def test_counts_a_server_does_not_report_are_unknown_not_zero():
    """The text of a chunk is not a count of tokens: without usage, the counts and rates are None."""
    server = FakeOpenAI(reply=PLAIN)
    try:
        finished = turn(engine_for(server.spec()))[-1]
    finally:
        server.close()
    assert isinstance(finished, TurnFinished) and finished.answer == "The sky is blue."
    stats = finished.stats
    assert (stats.prompt_tokens, stats.tokens, stats.forwards) == (None, None, None) and stats.steps == [0, 0]
    assert (stats.tokens_per_second, stats.steps_per_block, stats.tokens_per_forward) == (None, None, None)
    assert stats.blocks == 2 and stats.seed == 4 and not stats.seed_confirmed  # sent; maybe ignored
    assert server.requests[-1]["seed"] == 4


@pytest.mark.parametrize("strict", ["openai", "fastapi"])  # OpenAI's own API: 400; FastAPI's extra="forbid": 422
def test_a_strict_server_is_asked_again_without_the_extension_fields_and_never_sent_them_again(strict):
    server = FakeOpenAI(strict=strict)
    try:
        engine = engine_for(server.spec())
        first, second = turn(engine), turn(engine)
    finally:
        server.close()
    for events in (first, second):  # blocks only: no live canvas without the extension
        assert [type(e) for e in events] == [PromptEncoded, BlockCommitted, BlockCommitted, TurnFinished]
        assert events[-1].answer == "The sky is blue."
    extensions = [sorted(body.keys() & {"dg_chat", "chat_template_kwargs"}) for body in server.requests]
    assert extensions == [["chat_template_kwargs", "dg_chat"], [], []]


def test_another_400_is_not_retried(server):
    server.fail = "400"
    events = turn(engine_for(server.spec()))
    assert "400 Bad Request: This model's maximum context length is 8192 tokens" in events[-1].error
    assert len(server.requests) == 1 and "dg_chat" in server.requests[0]


def test_the_remote_engine_is_a_turn_engine_without_prompt_ids(server):
    engine = engine_for(server.spec())
    assert isinstance(engine, TurnEngine) and isinstance(engine.backend, BackendView)
    assert isinstance(engine.tokenizer, TokenPieces) and engine.prompt_ids([Message("user", "hi")], False) is None
    assert (engine.backend.name, engine.backend.noise, engine.backend.mask_token_id) == ("openai", None, None)
    assert server.requests == []  # a named model needs no request to connect


def test_without_a_model_name_the_first_served_model_answers(server):
    engine = engine_for(f"openai:{server.url}")
    assert engine.name == MODEL and engine.info.file == server.spec()
    assert turn(engine)[-1].answer == "The sky is blue."


def test_a_stop_closes_the_stream_at_once_and_keeps_the_blocks_received(server):
    server.hold_before = 1  # the server "denoises" block 1 until released
    engine = engine_for(server.spec())
    cancel = threading.Event()
    events = []
    for event in engine.turn([Message("user", "hi")], SamplerSettings(), cancel):
        events.append(event)
        if isinstance(event, BlockCommitted):
            cancel.set()  # the stop: block 1 is still being made
    finished = events[-1]
    assert isinstance(finished, TurnFinished) and finished.stopped and finished.answer == "The sky is "
    assert server.client_left.wait(5)  # the server saw the connection go, long before its next block


def test_a_stop_before_the_server_answers_ends_the_turn_at_once():
    """A server that takes the connection and never answers (a hung or queued server): a stop must
    not wait for the read timeout (minutes) to end the turn."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        engine = engine_for(f"openai:http://127.0.0.1:{listener.getsockname()[1]}/v1#m")
        cancel = threading.Event()
        threading.Timer(0.3, cancel.set).start()
        events: list = []
        reader = threading.Thread(target=lambda: events.extend(engine.turn([Message("user", "hi")],
                                                                           SamplerSettings(), cancel)))
        reader.start()
        reader.join(10)
        engine.close()
    assert not reader.is_alive(), "the stop waited for the server"
    assert len(events) == 1 and isinstance(events[0], TurnFinished) and events[0].stopped


def test_a_stop_while_the_connect_hangs_ends_the_turn_at_once():
    """A server behind a firewall that drops packets: the connect hangs until its timeout (10 s).
    A stop ends the turn at once; the connect is left to time out on its own thread."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        backlog = [socket.socket() for _ in range(3)]  # a full backlog: Linux drops the next SYNs
        for sock in backlog:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", port))
        engine = engine_for(f"openai:http://127.0.0.1:{port}/v1#m")
        cancel = threading.Event()
        threading.Timer(0.3, cancel.set).start()
        started = time.monotonic()
        events = list(engine.turn([Message("user", "hi")], SamplerSettings(), cancel))
        took = time.monotonic() - started
        engine.close()
        for sock in backlog:
            sock.close()
    assert took < client_module.CONNECT_SECONDS / 2, f"the stop waited {took:.1f} s for the connect"
    assert len(events) == 1 and isinstance(events[0], TurnFinished) and events[0].stopped


def test_a_finished_turn_has_closed_its_stream(server):
    """When TurnFinished arrives the connection and its stop watcher are gone, however long the
    caller keeps the turn's iterator."""
    engine = engine_for(server.spec())
    for event in engine.turn([Message("user", "hi")], SamplerSettings(), threading.Event()):
        if isinstance(event, TurnFinished):
            assert not event.stopped
            assert not [t for t in threading.enumerate() if t.name == "dg-chat-remote-stop"]
    engine.close()


# dg-chat ask


def test_ask_prints_the_answer_and_json_names_the_remote_model(server, capsys):
    assert main(["ask", "-m", server.spec(), "--seed", "7", "Why is the sky blue?"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "The sky is blue.\n" and "first block" in captured.err
    assert main(["ask", "-m", server.spec(), "--json", "hi"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["text"] == "The sky is blue." and answer["backend"] == "openai" and answer["prompt_ids"] is None
    assert answer["model"] == {"name": MODEL, "file": server.spec(), "quant": "", "backend": "openai",
                               "device": server.url.split("/")[2]}
    assert answer["stats"]["tokens"] == 9 and answer["stats"]["steps"] == [3, 3]


def test_ask_json_has_null_for_what_the_server_did_not_report(capsys):
    server = FakeOpenAI(reply=PLAIN)
    try:
        assert main(["ask", "-m", server.spec(), "--json", "--seed", "7", "hi"]) == 0
    finally:
        server.close()
    answer = json.loads(capsys.readouterr().out)
    assert answer["prompt_ids"] is None and answer["token_ids"] is None  # the server tokenizes
    stats = answer["stats"]
    unknown = ("prompt_tokens", "tokens", "forwards", "steps_per_block", "tokens_per_second",
               "prompt_tokens_per_second", "tokens_per_forward")
    assert {name: stats[name] for name in unknown} == dict.fromkeys(unknown)
    assert (stats["blocks"], stats["seed"], stats["seed_confirmed"]) == (2, 7, False)


def test_ask_json_escapes_what_a_terminal_would_act_on(capsys):
    hostile = "Reply \x9b31m \u202eevil\u202c \x7f \x1b[2J é"
    server = FakeOpenAI(reply=Reply(blocks=[("", hostile)]))
    try:
        assert main(["ask", "-m", server.spec(), "--json", "hi"]) == 0
    finally:
        server.close()
    out = capsys.readouterr().out
    assert out.isascii() and json.loads(out)["text"] == hostile  # escaped, not lost


@pytest.mark.parametrize("extension, why", [
    (False, "cut short: the server ended the answer at a length limit of its own (its max_tokens or context)"),
    (True, "cut short: no end of turn within 2 blocks (--max-canvases raises the limit)"),
], ids=["another server", "dg-chat serve"])
def test_an_answer_a_server_cut_at_a_length_limit_says_whose_limit(capsys, extension, why):
    server = FakeOpenAI(reply=Reply(canvas=False, extension=extension, finish="length"))
    try:
        assert main(["ask", "-m", server.spec(), "hi"]) == 0
    finally:
        server.close()
    assert capsys.readouterr().err.splitlines()[-1] == why


def test_ask_says_the_server_did_not_report_the_tokens_and_may_not_use_the_seed(capsys):
    server = FakeOpenAI(reply=PLAIN)
    try:
        assert main(["ask", "-m", server.spec(), "--seed", "7", "hi"]) == 0
    finally:
        server.close()
    line = capsys.readouterr().err.strip()
    assert line.startswith("tokens: not reported by the server · 2 blocks · first block ")  # no steps, no tok/s
    assert line.endswith(" s · seed 7 (sent; the server may not use it)")


def test_ctrl_c_in_ask_closes_the_stream_and_keeps_the_partial_answer(server, capsys, monkeypatch):
    server.hold_before = 1
    block = AnswerStream.block

    def interrupt_after_the_first_block(stream: AnswerStream, answer: str) -> None:
        block(stream, answer)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the server makes block 1

    monkeypatch.setattr(AnswerStream, "block", interrupt_after_the_first_block)
    assert main(["ask", "-m", server.spec(), "hi"]) == 130
    captured = capsys.readouterr()
    assert captured.out == "The sky is \n" and "stopped" in captured.err
    assert server.client_left.wait(5)


@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
def test_sigterm_in_ask_interrupts_and_keeps_the_blocks_committed(server, capsys, monkeypatch, json_output):
    server.hold_before = 1
    turn = RemoteEngine.turn

    def terminated_after_the_first_block(self, *args, **kwargs):
        for event in turn(self, *args, **kwargs):
            yield event
            if isinstance(event, BlockCommitted):
                os.kill(os.getpid(), signal.SIGTERM)  # `timeout` ends it while the server makes block 1

    monkeypatch.setattr(RemoteEngine, "turn", terminated_after_the_first_block)
    assert main(["ask", "-m", server.spec(), *(["--json"] if json_output else []), "hi"]) == 130
    captured = capsys.readouterr()
    assert captured.err.endswith("dg-chat: interrupted\n")
    if json_output:
        assert json.loads(captured.out) == {"text": "The sky is ", "thinking": "", "stopped": True,
                                            "error": "interrupted"}
    else:
        assert captured.out == "The sky is \n"
    assert server.client_left.wait(5)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # and the handler is put back


@pytest.mark.parametrize("failure", ["cut", "error-event"])
def test_ask_json_of_a_failed_answer_is_one_object_with_what_was_committed(server, failure, capsys):
    server.fail = failure
    assert main(["ask", "-m", server.spec(), "--json", "hi"]) == 1
    captured = capsys.readouterr()
    answer = json.loads(captured.out)
    assert (answer["text"], answer["stopped"]) == ("The sky is ", False)
    assert answer["error"] in error_line(captured.err)


ERRORS = {
    "400": "refused the request (400 Bad Request: This model's maximum context length is 8192 tokens)",
    "401": ("wants an API key (401 Unauthorized: Incorrect API key provided:); put it in the environment "
            "variable OPENAI_API_KEY"),
    "403": "wants an API key (403 Forbidden",
    "404": "not found (404 Not Found: The model `google/diffusiongemma-26B-A4B-it` does not exist.); check the model",
    "429": "is busy (429 Too Many Requests: Rate limit reached: 3 requests per minute); try again later",
    "500": "failed (500 Internal Server Error: CUDA error: an illegal memory access was encountered)",
    "cut": "was cut mid-answer (peer closed connection without sending complete message body",
    "cut-before": "was cut mid-answer (peer closed connection without sending complete message body",
    "ends": "was cut mid-answer (it ended after 1 block(s) without finishing); the partial answer is kept",
    "malformed": "sent a malformed event: '{\"choices\": [{\"delta\":'",
    "not-sse": "did not answer with an event stream (Content-Type 'text/html')",
    "error-event": "failed mid-answer: worker died",
    "redirect": "redirects to https://llm.example.com/v1/chat/completions (301); use that as the base URL",
    "endless-error": "failed (502 Bad Gateway: Bad gateway upstream unavailable upstream unavailable",
    "html-error": "failed (502 Bad Gateway: 502 Bad Gateway & co)",
}


@pytest.mark.parametrize("failure", ERRORS)
def test_each_server_failure_is_one_line_and_a_cut_answer_keeps_its_part(server, failure, capsys):
    server.fail = failure
    assert main(["ask", "-m", server.spec(), "hi"]) == 1
    captured = capsys.readouterr()
    line = error_line(captured.err)
    assert ERRORS[failure] in line
    cut = failure in ("cut", "ends", "malformed", "error-event")
    assert line.startswith("dg-chat: error: the stream from " if failure.startswith(("cut", "ends")) else
                           f"dg-chat: error: {server.spec()}")
    assert captured.out == ("The sky is \n" if cut else "")
    assert line.endswith("; the partial answer is kept") == (failure in ("cut", "ends"))  # only when there is one


def test_an_event_that_never_ends_is_refused_before_it_fills_the_memory(server, monkeypatch, capsys):
    monkeypatch.setattr(client_module, "EVENT_BYTES", 2**20)
    server.fail = "endless-event"
    assert main(["ask", "-m", server.spec(), "hi"]) == 1
    assert error_line(capsys.readouterr().err) == (f"dg-chat: error: {server.spec()} sent over 1 MiB without "
                                                   "ending an event; is it an OpenAI-compatible server?")


def test_a_number_out_of_range_is_a_malformed_chunk(server, capsys):
    """A count of 1e400 (JSON that reads as infinity) is one line, not an internal error."""
    server.reply = Reply(usage=(float("inf"), 9))  # sent as Infinity
    assert main(["ask", "-m", server.spec(), "hi"]) == 1
    assert "sent a malformed chunk: " in error_line(capsys.readouterr().err)
    step = {"step": float("inf"), "max_steps": 3, "pieces": ["a"], "accepted": [True], "changed": [True],
            "mean_entropy": 0.0}
    with pytest.raises(RemoteError, match="sent a malformed canvas event: "):
        engine_for(server.spec())._canvas_step(step, 0)


def test_an_unreachable_server_is_one_line(capsys):
    spec = f"openai:http://127.0.0.1:{free_port()}/v1#m"
    assert main(["ask", "-m", spec, "hi"]) == 1
    assert error_line(capsys.readouterr().err) == (f"dg-chat: error: cannot reach {spec} ([Errno 111] Connection "
                                                   "refused); is the server running at that address?")


def test_a_server_that_never_lists_its_models_is_one_line_within_the_list_timeout(monkeypatch, capsys):
    """The model list gets a short read timeout of its own (LIST_SECONDS), not the answer's minutes."""
    monkeypatch.setattr(client_module, "LIST_SECONDS", 1.0)
    with socket.socket() as listener:  # takes the connection, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        spec = f"openai:http://127.0.0.1:{listener.getsockname()[1]}/v1"
        assert main(["ask", "-m", spec, "hi"]) == 1
    assert error_line(capsys.readouterr().err) == (f"dg-chat: error: {spec} stopped answering within 1 s; "
                                                   "is the server up?")


@pytest.mark.parametrize("url, problem", [
    ("not a url", "'not a url' is not an http(s) URL"),
    ("", "the URL is missing"),
    ("http://[::1", "'http://[::1' has no valid host and port (a port is from 0 to 65535)"),
    ("http://h:abc/v1", "'http://h:abc/v1' has no valid host and port (a port is from 0 to 65535)"),
    ("http://h:99999/v1", "'http://h:99999/v1' has no valid host and port (a port is from 0 to 65535)"),
])
def test_a_malformed_spec_is_one_line(url, problem, capsys):
    assert main(["ask", "-m", f"openai:{url}#m", "hi"]) == 1
    line = error_line(capsys.readouterr().err)
    assert "a remote model is openai:<base-url>#<model>" in line and line.endswith(f"; {problem}")


# the API key


def test_the_key_comes_from_the_variable_the_settings_name(monkeypatch, capsys):
    server = FakeOpenAI(key=KEY)
    monkeypatch.setenv("DG_CHAT_API_KEY_ENV", "VLLM_KEY")
    monkeypatch.setenv("VLLM_KEY", KEY)
    try:
        assert main(["ask", "-m", server.spec(), "hi"]) == 0
        capsys.readouterr()
        monkeypatch.setenv("VLLM_KEY", "sk-wrong")
        assert main(["ask", "-m", server.spec(), "hi"]) == 1
    finally:
        server.close()
    assert server.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert ("refused the API key from VLLM_KEY (401 Unauthorized: Missing or invalid API key)"
            in error_line(capsys.readouterr().err))


def test_the_key_never_shows_in_output_json_logs_or_errors(keyed, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    assert main(["ask", "-m", keyed.spec(), "hi"]) == 0
    assert main(["ask", "-m", keyed.spec(), "--json", "hi"]) == 0
    assert main(["-m", keyed.spec(), "doctor"]) in (0, 1)
    keyed.fail = "401"  # the server echoes the key it got
    assert main(["ask", "-m", keyed.spec(), "hi"]) == 1
    assert main(["-m", keyed.spec(), "doctor"]) == 1
    captured = capsys.readouterr()
    assert "refused the API key from OPENAI_API_KEY (401 Unauthorized: Incorrect API key provided: ***)" in captured.err
    assert "api key" in captured.out and caplog.records  # doctor ran its check; httpx logged
    for text in (captured.out, captured.err, caplog.text, *(repr(r.__dict__) for r in caplog.records)):
        assert KEY not in text


def test_a_short_key_masks_its_echo_not_the_letters_of_other_words():
    client = RemoteClient(parse_remote("openai:http://127.0.0.1:9/v1#m"), "e", "OPENAI_API_KEY")
    assert client.clip("a wrong bearer token: e") == "a wrong bearer token: ***"
    assert client.clip('{"key": "e"}') == '{"key": "***"}'
    client.close()


@pytest.mark.parametrize("value", [f"{KEY}\n", f" {KEY}\r\n"])
def test_a_key_with_a_line_end_is_sent_without_it(keyed, monkeypatch, capsys, value):
    """A key copied from a file keeps its line end; an HTTP library would refuse it and quote it."""
    monkeypatch.setenv("OPENAI_API_KEY", value)
    assert main(["ask", "-m", keyed.spec(), "hi"]) == 0
    assert capsys.readouterr().out == "The sky is blue.\n"


def test_a_key_no_header_can_carry_is_one_line_that_does_not_show_it(server, monkeypatch, capsys):
    for value in ("sk-séc-5f1c0ffee", "sk-5f1c\x1bffee", "sk-5f1c\nffee"):
        monkeypatch.setenv("OPENAI_API_KEY", value)
        assert main(["ask", "-m", server.spec(), "hi"]) == 1
        assert main(["-m", server.spec(), "doctor"]) == 1
        captured = capsys.readouterr()
        line = error_line(captured.err)
        assert line == ("dg-chat: error: the API key in OPENAI_API_KEY holds characters an HTTP header cannot carry "
                        "(non-ASCII or control characters); set the variable to the key alone")
        assert "holds characters an HTTP header cannot carry" in captured.out  # doctor's api key check
        assert "5f1c" not in captured.out + captured.err


# dg-chat doctor


def test_doctor_checks_the_endpoint_the_key_and_the_model(keyed, monkeypatch, capsys):
    assert main(["-m", keyed.spec(), "doctor"]) in (0, 1)  # other checks depend on the machine
    lines = {line.split()[0] + " " + line.split()[1]: line for line in capsys.readouterr().out.splitlines()}
    assert "answers, serving 1 model(s)" in lines["ok endpoint"]
    assert "accepted, from OPENAI_API_KEY" in lines["ok api"]
    assert f"{MODEL} is served" in lines["ok model"]
    main(["-m", keyed.spec("gemma-9000"), "doctor"])
    assert f"gemma-9000 is not served; the server lists: {MODEL}" in capsys.readouterr().out
    monkeypatch.delenv("OPENAI_API_KEY")
    main(["-m", keyed.spec(), "doctor"])
    out = capsys.readouterr().out
    assert "ok   endpoint" in out and "fail api key" in out and "wants an API key" in out
    main(["-m", f"openai:http://127.0.0.1:{free_port()}/v1#m", "doctor"])
    assert "fail endpoint        cannot reach" in capsys.readouterr().out


# dg-chat's own server


@pytest.fixture(scope="module")
def served(tiny_chat_gguf, tmp_path_factory):
    """`dg-chat serve` on the tiny DiffusionGemma GGUF, as a process of its own; yields its base URL."""
    home = tmp_path_factory.mktemp("serve-home")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           **{f"DG_CHAT_{name}_DIR": str(home / name.lower()) for name in ("CONFIG", "DATA", "CACHE")}}
    process = subprocess.Popen([sys.executable, "-m", "dg_chat.cli", "-m", str(tiny_chat_gguf), "--device", "cpu",
                                "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    try:
        line = process.stdout.readline()  # printed once it accepts connections
        found = re.search(r" at (http://\S+) ", line)
        assert found, line + process.stderr.read()
        yield found.group(1)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def test_dg_chat_serve_gives_the_local_engines_answer_and_its_live_canvas(served, tiny_chat_gguf):
    sampler = SamplerSettings(seed=5, max_steps=3, max_canvases=2)
    question = [Message("user", "Why is the sky blue?")]
    local = load_engine(Settings(model=str(tiny_chat_gguf), device="cpu"))
    try:
        expected = list(local.turn(question, sampler))
        cells = [[None if t in local.end_ids else local.tokenizer.piece(t) for t in e.argmax.tolist()]
                 for e in expected if isinstance(e, CanvasStep)]
    finally:
        local.close()
    remote = engine_for(f"openai:{served}")
    events = list(remote.turn(question, sampler))
    assert [type(e) for e in events] == [type(e) for e in expected]
    assert events[-1].answer == expected[-1].answer and events[-1].thinking == expected[-1].thinking
    assert events[-1].stats.steps == expected[-1].stats.steps and events[-1].stats.seed == 5
    assert events[-1].stats.tokens == expected[-1].stats.tokens > 0
    assert events[-1].stats.truncated == expected[-1].stats.truncated  # finish_reason "length" or "stop"
    steps = [e for e in events if isinstance(e, CanvasStep)]
    assert [[None if n in remote.end_ids else remote.tokenizer.piece(n) for n in s.tokens.tolist()]
            for s in steps] == cells
    assert [(s.block, s.step) for s in steps] == [(e.block, e.step) for e in expected if isinstance(e, CanvasStep)]


def test_ask_through_dg_chat_serve_prints_what_ask_prints_locally(served, tiny_chat_gguf, capsys):
    flags = ["--seed", "2", "--steps", "2", "--max-canvases", "1", "Hello"]
    assert main(["ask", "-m", str(tiny_chat_gguf), "--device", "cpu", *flags]) == 0
    local = capsys.readouterr().out
    assert main(["ask", "-m", f"openai:{served}", *flags]) == 0
    assert capsys.readouterr().out == local
