"""`dg-chat serve`: the real server on 127.0.0.1 (an ephemeral port, uvicorn in a thread) over the
demo model and a tiny random DiffusionGemma with the Gemma 4 chat format, driven over HTTP with
httpx, its answers checked against the same engine run locally; the command itself in a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from dg_chat.config import SamplerSettings, Settings
from dg_chat.engine.engine import Engine
from dg_chat.engine.events import BlockCommitted, CanvasStep, Event, TurnFailed, TurnFinished
from dg_chat.engine.loader import load_engine
from dg_chat.engine.turn_engine import ContextUse
from dg_chat.errors import DgChatError
from dg_chat.serve import app as app_module, worker as worker_module
from dg_chat.serve.app import create_app
from dg_chat.serve.protocol import Deltas
from dg_chat.serve.server import listen, running, url
from dg_chat.serve.worker import EngineWorker
from dg_chat.text.chat import Message

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "demo.gguf"
DEFAULTS = SamplerSettings(max_steps=6)
"""The servers' sampler defaults: few steps, fast turns."""


@contextmanager
def serving(engine: Engine, *, token: str | None = None, local_only: bool = False) -> Iterator[httpx.Client]:
    """The server of model "demo" on a free port of 127.0.0.1, its uvicorn in a thread; a client for its /v1."""
    worker = EngineWorker(engine)
    app = create_app(worker, "demo", DEFAULTS, token, local_only=local_only)
    try:
        with listen("127.0.0.1", 0) as sock, running(app, worker, sock), \
                httpx.Client(base_url=url(sock), timeout=120) as client:
            yield client
    finally:
        worker.close()


def local_turn(engine: Engine, messages: list[Message], sampler: SamplerSettings) -> list[Event]:
    """The turn as `dg-chat ask` runs it: from an empty context."""
    engine.backend.prefill([])
    return list(engine.turn(messages, sampler))


def sse_events(response: httpx.Response) -> list[tuple[str | None, str]]:
    """(event name or None, data) of each Server-Sent Event."""
    events, name, data = [], None, []
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))
        elif not line and data:
            events.append((name, "\n".join(data)))
            name, data = None, []
    return events


def stream(client: httpx.Client, body: dict[str, Any]) -> list[tuple[str | None, str]]:
    with client.stream("POST", "/chat/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return sse_events(response)


def chat(text: str, seed: int, **fields: Any) -> dict[str, Any]:
    return {"model": "demo", "messages": [{"role": "user", "content": text}], "seed": seed, **fields}


@pytest.fixture(scope="module")
def demo() -> Iterator[Engine]:
    engine = load_engine(Settings(model=str(DEMO), device="cpu"))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def tiny(tiny_chat_gguf: Path) -> Iterator[Engine]:
    """A random DiffusionGemma with the Gemma 4 tokenizer: it never ends early (several blocks)."""
    engine = load_engine(Settings(model=str(tiny_chat_gguf), device="cpu"))
    yield engine
    engine.close()


def test_models_lists_the_loaded_model(demo):
    with serving(demo) as client:
        models = client.get("/models").json()
    assert models["object"] == "list"
    assert [(m["id"], m["object"], m["max_model_len"]) for m in models["data"]] == [("demo", "model", 4096)]


def test_a_whole_answer_is_the_local_engines_answer(demo):
    messages = [Message("system", "You are a player."), Message("user", "Tell me of the king")]
    sampler = replace(DEFAULTS, seed=11, max_steps=4, max_canvases=2)
    *_, finished = local_turn(demo, messages, sampler)
    body = {"model": "demo", "seed": 11, "max_tokens": 65,  # 65 tokens: two 64-token canvases
            "messages": [{"role": "system", "content": "You are a player."},
                         {"role": "user", "content": [{"type": "text", "text": "Tell me of the king"}]}],
            "dg_chat": {"sampler": {"max_steps": 4}}}
    with serving(demo) as client:
        answer = client.post("/chat/completions", json=body).json()
    assert answer["object"] == "chat.completion" and answer["model"] == "demo"
    (choice,) = answer["choices"]
    assert choice["message"] == {"role": "assistant", "content": finished.answer}
    assert choice["finish_reason"] == ("stop" if finished.token_ids[-1] in demo.end_ids else "length")
    assert answer["usage"] == {"prompt_tokens": len(demo.prompt_ids(messages, False)),
                               "completion_tokens": len(finished.token_ids),
                               "total_tokens": len(demo.prompt_ids(messages, False)) + len(finished.token_ids)}


def test_a_streamed_answer_is_one_chunk_per_block(tiny):
    sampler = replace(DEFAULTS, seed=3, max_steps=2, max_canvases=3)
    events = local_turn(tiny, [Message("user", "Hello")], sampler)
    blocks = [e for e in events if isinstance(e, BlockCommitted)]
    finished = events[-1]
    assert len(blocks) == 3 and not finished.stopped
    with serving(tiny) as client:
        sent = stream(client, chat("Hello", 3, max_tokens=48, stream_options={"include_usage": True},
                                   dg_chat={"sampler": {"max_steps": 2}}))
    assert sent[-1] == (None, "[DONE]") and all(name is None for name, _ in sent)
    chunks = [json.loads(data) for _, data in sent[:-1]]
    assert len(chunks) == len(blocks)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert [c["dg_chat"] for c in chunks] == [{"block": b.block, "steps": b.steps} for b in blocks]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant" and all("role" not in d for d in deltas[1:])
    assert "".join(d["content"] for d in deltas) == finished.answer
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "length"]
    assert [("usage" in c) for c in chunks] == [False, False, True]
    assert chunks[-1]["usage"]["completion_tokens"] == len(finished.token_ids) == 48


def test_canvas_events_come_before_their_block_when_asked(tiny):
    sampler = replace(DEFAULTS, seed=5, max_steps=2, max_canvases=2)
    events = local_turn(tiny, [Message("user", "Hi")], sampler)
    body = chat("Hi", 5, max_tokens=32, dg_chat={"canvas": True, "sampler": {"max_steps": 2}})
    with serving(tiny) as client:
        sent = stream(client, body)
        plain = stream(client, {**body, "dg_chat": {"sampler": {"max_steps": 2}}})
    expected = []  # what the local turn gives, in the order the server sends it
    for event in events:
        if isinstance(event, CanvasStep):
            expected.append(("dg_chat.canvas", {
                "block": event.block, "step": event.step, "max_steps": 2,
                "pieces": [tiny.tokenizer.piece(t) for t in event.argmax.tolist()],
                "end": [t in tiny.end_ids for t in event.argmax.tolist()],
                "accepted": event.accepted.tolist(), "changed": event.changed.tolist(),
                "mean_entropy": pytest.approx(event.mean_entropy)}))
        elif isinstance(event, BlockCommitted):
            expected.append((None, {"block": event.block, "steps": event.steps}))
    got = [(name, json.loads(data) if name else json.loads(data)["dg_chat"]) for name, data in sent[:-1]]
    assert got == expected
    assert all(len(data["pieces"]) == tiny.backend.canvas_length for name, data in got if name)
    assert [name for name, _ in plain] == [None, None, None]  # not asked: two chunks and [DONE]


def test_thinking_reaches_the_model(tiny):
    messages = [Message("user", "Why?")]
    sampler = replace(DEFAULTS, seed=2, max_steps=2, max_canvases=1, thinking=True)
    *_, finished = local_turn(tiny, messages, sampler)
    with serving(tiny) as client:
        answer = client.post("/chat/completions", json=chat("Why?", 2, max_tokens=1, dg_chat={
            "thinking": True, "sampler": {"max_steps": 2}})).json()
    message = answer["choices"][0]["message"]
    assert message["content"] == finished.answer
    assert message.get("reasoning_content", "") == finished.thinking
    # the thinking prompt (<|think|> in a system turn) is longer than the plain one
    thinking_prompt, plain_prompt = tiny.prompt_ids(messages, True), tiny.prompt_ids(messages, False)
    assert answer["usage"]["prompt_tokens"] == len(thinking_prompt) > len(plain_prompt)


def test_deltas_add_up_and_hold_back_a_split_character():
    deltas = Deltas()

    def block(n: int, thinking: str, answer: str) -> BlockCommitted:
        return BlockCommitted(n, np.zeros(1, np.int32), 1, thinking, answer, final=False)

    assert deltas.next(block(0, "Hm\ufffd", ""), last=False) == {"role": "assistant", "reasoning_content": "Hm",
                                                                    "content": ""}
    assert deltas.next(block(1, "Hmé", "Caf\ufffd"), last=False) == {"reasoning_content": "é", "content": "Caf"}
    assert deltas.next(block(2, "Hmé", "Café!\ufffd"), last=True) == {"content": "é!\ufffd"}


def test_a_bearer_token_is_required_when_set(demo):
    token = "s3cret-token"
    with serving(demo, token=token) as client:
        missing = client.get("/models")
        wrong = client.get("/models", headers={"Authorization": "Bearer nope"})
        ok = client.get("/models", headers={"Authorization": f"Bearer {token}"})
        answer = client.post("/chat/completions", json=chat("Hi", 1), headers={"Authorization": f"bearer {token}"})
    for response in (missing, wrong):
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["type"] == "authentication_error" and token not in response.text
    assert ok.status_code == 200 and answer.status_code == 200 and token not in answer.text


def test_a_body_a_web_page_could_send_without_asking_is_refused(demo):
    # text/plain and forms are what a page may POST to any address without a CORS preflight
    body = json.dumps(chat("Hi", 1))
    with serving(demo) as client:
        refused = [client.post("/chat/completions", content=body, headers={"content-type": kind})
                   for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")]
        json_with_charset = client.post("/chat/completions", content=body,
                                        headers={"content-type": "application/json; charset=utf-8"})
    for response in refused:
        assert response.status_code == 415 and "Content-Type: application/json" in response.json()["error"]["message"]
    assert json_with_charset.status_code == 200


def test_a_local_only_server_refuses_requests_for_other_host_names(demo):
    with serving(demo, local_only=True) as client:
        port = client.base_url.port
        answers = {host: client.get("/models", headers={"host": host}).status_code
                   for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "app.localhost",
                                f"evil.example:{port}", "127.0.0.1.evil.example", "[::1", "")}
        refused = client.post("/chat/completions", json=chat("Hi", 1), headers={"host": "evil.example"})
    assert answers == {f"localhost:{port}": 200, f"127.0.0.1:{port}": 200, f"[::1]:{port}": 200, "app.localhost": 200,
                       f"evil.example:{port}": 403, "127.0.0.1.evil.example": 403, "[::1": 403, "": 403}
    assert refused.status_code == 403 and refused.json()["error"]["message"].startswith(
        "this server answers requests for localhost only, not for 'evil.example'")


def test_a_token_no_client_could_send_is_refused_in_one_line(monkeypatch):
    from dg_chat.commands.serve import bearer_token

    monkeypatch.setenv("TEST_SERVE_TOKEN", " ключ\n")
    with pytest.raises(DgChatError, match="TEST_SERVE_TOKEN holds characters an HTTP header cannot carry") as info:
        bearer_token("TEST_SERVE_TOKEN")
    assert "ключ" not in str(info.value)
    monkeypatch.setenv("TEST_SERVE_TOKEN", " s3cret\n")
    assert bearer_token("TEST_SERVE_TOKEN") == "s3cret"


@pytest.mark.parametrize("body, status, message", [
    (b"{bad", 400, "the request body is not valid JSON: Expecting property name"),
    (b"[1, 2]", 400, "the request body must be a JSON object, not a list"),
    ({"messages": []}, 400, "messages: expected a non-empty list"),
    ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role: expected one of system"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "only text is supported"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, 400,
     "the last message must be the user's"),
    (chat("x", 1) | {"seed": "7"}, 400, "seed: expected an integer, got \"7\""),
    (chat("x", 1) | {"max_tokens": 0}, 400, "max_tokens: must be at least 1"),
    (chat("x", 1) | {"n": 2}, 400, "one choice per request"),
    (chat("x", 1) | {"dg_chat": {"canvas": "yes"}}, 400, "dg_chat.canvas: expected true or false"),
    (chat("x", 1) | {"dg_chat": {"sampler": {"max_steps": 0}}}, 400, "sampler.max_steps: must be from 1 to 10000"),
    (chat("x", 1) | {"dg_chat": {"sampler": {"steps": 3}}}, 400, "dg_chat.sampler.steps: unknown setting"),
    (chat("x", 1) | {"dg_chat": {"sampler": {"t_min": 0.9}}}, 400, "needs t_min <= t_max"),
    (chat("x", 1) | {"dg_chat": {"sampler": {"t_max": True}}}, 400, "dg_chat.sampler.t_max: expected a number"),
    (chat("x", 1) | {"dg_chat": {"sampler": {"t_max": 1e39}}}, 400, "dg_chat.sampler.t_max: must be in (0, 100]"),
    (chat("word " * 5000, 1), 400, "exceeds the model's context of 4096 tokens"),
    (chat("x", 1) | {"model": "gpt-4o"}, 404, "the model \"gpt-4o\" does not exist: this server has \"demo\""),
    # lone surrogates, as the JSON escapes "\\ud800" and "\\udcff": quoted back as U+FFFD
    (json.dumps(chat("x", 1) | {"model": "\ud800"}).encode(), 404, "the model \"\ufffd\" does not exist"),
    (json.dumps({"messages": [{"role": "\udcff", "content": "x"}]}).encode(), 400,
     "messages[0].role: expected one of system, developer, user, assistant, got \"\ufffd\""),
    (chat("x", 1) | {"dg_chat": {"sampler": {"t_max": 10**320}}}, 400, "dg_chat.sampler.t_max: must be in (0, 100]"),
])
def test_a_bad_request_gets_a_one_line_error(demo, body, status, message):
    with serving(demo) as client:
        if isinstance(body, bytes):
            response = client.post("/chat/completions", content=body, headers={"content-type": "application/json"})
        else:
            response = client.post("/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert message in error["message"] and "\n" not in error["message"]
    assert error["code"] == status and error["type"] == "invalid_request_error"


def test_a_body_over_the_limit_is_refused_before_it_is_read_whole(demo, monkeypatch):
    monkeypatch.setattr(app_module, "MAX_BODY_BYTES", 1000)
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold as the body arrives
        for _ in range(100):
            yield b" " * 100

    with serving(demo) as client:
        declared = client.post("/chat/completions", content=b" " * 1001, headers={"content-type": "application/json"})
        streamed = client.post("/chat/completions", content=chunks(), headers={"content-type": "application/json"})
        fits = client.post("/chat/completions", json=chat("x", 1))
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"]["message"].startswith("the request body is over 1,000 bytes")
    assert fits.status_code == 200


def test_a_max_tokens_of_hundreds_of_digits_is_no_limit(demo):
    body = json.dumps(chat("x", 1) | {"max_tokens": 10**400}).encode()
    with serving(demo) as client:
        response = client.post("/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]


def test_text_that_is_not_unicode_is_read_as_replacement_characters(demo):
    odd = json.dumps(chat("what is a \udcff canvas", 1)).encode()  # json.dumps writes the lone surrogate as \udcff
    with serving(demo) as client:
        answer = client.post("/chat/completions", content=odd, headers={"content-type": "application/json"})
        clean = client.post("/chat/completions", json=chat("what is a \ufffd canvas", 1))
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"] == clean.json()["choices"]


def test_unknown_paths_and_methods_get_json_errors(demo):
    with serving(demo) as client:
        path, method = client.get("/completions"), client.get("/chat/completions")
    assert path.status_code == 404 and "no such endpoint: /v1/completions" in path.json()["error"]["message"]
    assert method.status_code == 405 and "GET is not allowed" in method.json()["error"]["message"]


def test_eight_concurrent_clients_get_their_own_answers(demo):
    prompts = ["What is a canvas?", "How do I stop an answer?", "What is self-conditioning?",
               "What does doctor check?", "Which quant fits an RTX 4090?", "How do I export a chat?",
               "Who are you?", "What is the entropy bound?"]
    expected = [local_turn(demo, [Message("user", p)], replace(DEFAULTS, seed=100 + i))[-1].answer
                for i, p in enumerate(prompts)]
    assert len(set(expected)) == len(expected)  # the check below could see a mix-up

    def ask(i: int) -> str:
        body = chat(prompts[i], 100 + i)
        if i % 2:  # half of them streamed
            return "".join(json.loads(data)["choices"][0]["delta"]["content"]
                           for _, data in stream(client, body)[:-1])
        return client.post("/chat/completions", json=body).json()["choices"][0]["message"]["content"]

    with serving(demo) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    assert answers == expected


class EngineWrapper:
    """The engine with some of its methods replaced by a subclass; everything else passes through."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


class RecordingEngine(EngineWrapper):
    """The engine, recording how each turn finished."""

    def __init__(self, engine: Engine):
        super().__init__(engine)
        self.finished: list[TurnFinished] = []

    def turn(self, *args: Any) -> Iterator[Event]:
        for event in self.engine.turn(*args):
            if isinstance(event, TurnFinished):
                self.finished.append(event)
            yield event


def test_a_client_that_goes_away_stops_its_turn(demo):
    engine = RecordingEngine(demo)
    endless = chat("Tell me of the king", 1, stream=True, dg_chat={
        "canvas": True, "sampler": {"max_steps": 1000, "confidence": 0.0, "max_canvases": 8}})
    with serving(engine) as client:
        with client.stream("POST", "/chat/completions", json=endless) as response:
            first = next(line for line in response.iter_lines() if line.startswith("data: "))
            assert json.loads(first.removeprefix("data: "))["step"] == 1
        # gone after one step of up to 8000: the engine is free for the next client at once
        after = client.post("/chat/completions", json=chat("Who is there?", 2))
    assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"]
    stopped, done = engine.finished
    assert stopped.stopped and stopped.stats.forwards < 1000 and not done.stopped


def test_stopping_the_server_ends_its_open_streams(demo):
    worker = EngineWorker(demo)
    endless = chat("Tell me of the king", 1, stream=True, dg_chat={
        "canvas": True, "sampler": {"max_steps": 1000, "confidence": 0.0, "max_canvases": 8}})
    try:
        with listen("127.0.0.1", 0) as sock, httpx.Client(base_url=url(sock), timeout=120) as client, \
                running(create_app(worker, "demo", DEFAULTS), worker, sock) as server, \
                client.stream("POST", "/chat/completions", json=endless) as response:
            lines = response.iter_lines()
            assert next(lines) == "event: dg_chat.canvas"
            server.should_exit = True  # as Ctrl+C does
            rest = [line for line in lines if line.startswith("data: {\"error") or line == "data: [DONE]"]
    finally:
        worker.close()
    assert [json.loads(rest[0].removeprefix("data: "))["error"]["code"], rest[1]] == [503, "data: [DONE]"]


class PromptThreads(EngineWrapper):
    """The engine, recording the thread of every prompt the server has it tokenize (a turn's own
    tokenizing is the engine's, on its thread)."""

    def __init__(self, engine: Engine):
        super().__init__(engine)
        self.threads: list[str] = []

    def prompt_ids(self, *args: Any) -> list[int]:
        self.threads.append(threading.current_thread().name)
        return self.engine.prompt_ids(*args)

    def context_use(self, *args: Any) -> ContextUse:
        self.threads.append(threading.current_thread().name)
        return self.engine.context_use(*args)


def test_prompts_are_tokenized_on_the_engine_thread_only(demo):
    engine = PromptThreads(demo)  # libllama's tokenizer must not run beside a turn
    with serving(engine) as client:
        whole = client.post("/chat/completions", json=chat("Hi", 1))
        streamed = stream(client, chat("Hi", 1))
        too_long = [client.post("/chat/completions", json=chat("word " * 5000, 1, stream=flag))
                    for flag in (False, True)]
    assert whole.status_code == 200 and streamed[-1] == (None, "[DONE]")
    for response in too_long:  # a streamed request too: refused before its stream starts
        assert response.status_code == 400 and "exceeds the model's context" in response.json()["error"]["message"]
    assert len(engine.threads) == 4 and set(engine.threads) == {"dg-chat-engine"}


class HeldEngine(EngineWrapper):
    """The engine, each turn held until `release` is set; `started` once one is."""

    def __init__(self, engine: Engine):
        super().__init__(engine)
        self.started, self.release = threading.Event(), threading.Event()

    def turn(self, *args: Any) -> Iterator[Event]:
        self.started.set()
        self.release.wait(60)
        yield from self.engine.turn(*args)


@contextmanager
def held_queue(demo: Engine, monkeypatch, *, waiting: int
               ) -> Iterator[tuple[HeldEngine, EngineWorker, httpx.Client, ThreadPoolExecutor]]:
    """A server whose engine holds each turn until `engine.release` is set (set on leaving at the
    latest), with room for `waiting` turns behind the running one."""
    monkeypatch.setattr(worker_module, "MAX_WAITING", waiting)
    engine = HeldEngine(demo)
    worker = EngineWorker(engine)
    try:
        with listen("127.0.0.1", 0) as sock, running(create_app(worker, "demo", DEFAULTS), worker, sock), \
                httpx.Client(base_url=url(sock), timeout=120) as client, ThreadPoolExecutor(3) as pool:
            try:
                yield engine, worker, client, pool
            finally:
                engine.release.set()
    finally:
        worker.close()


def test_a_request_beyond_the_waiting_limit_gets_429(demo, monkeypatch):
    with held_queue(demo, monkeypatch, waiting=2) as (engine, worker, client, pool):
        asked = [pool.submit(client.post, "/chat/completions", json=chat("Hi", 1))]
        assert engine.started.wait(60)  # one runs...
        asked += [pool.submit(client.post, "/chat/completions", json=chat("Hi", seed)) for seed in (2, 3)]
        deadline = time.monotonic() + 60
        while worker.waiting < 2 and time.monotonic() < deadline:  # ...two wait
            time.sleep(0.01)
        refused = client.post("/chat/completions", json=chat("Hi", 4))
        engine.release.set()
        answered = [future.result().status_code for future in asked]
    assert refused.status_code == 429 and refused.json() == {"error": {
        "message": "the server is busy: 2 requests are waiting", "type": "rate_limit_error", "code": 429}}
    assert answered == [200, 200, 200] and worker.waiting == 0


def test_requests_whose_clients_left_hold_no_place_in_the_queue(demo, monkeypatch):
    """Clients that time out while their turns wait (an SDK's timeout and retry) do not fill the
    queue: a new request still waits its turn instead of a 429."""
    with held_queue(demo, monkeypatch, waiting=2) as (engine, worker, client, pool):
        first = pool.submit(client.post, "/chat/completions", json=chat("Hi", 1))
        assert engine.started.wait(60)
        for seed in (2, 3):  # two clients give up while their turns wait
            with pytest.raises(httpx.ReadTimeout):
                client.post("/chat/completions", json=chat("Hi", seed), timeout=httpx.Timeout(120, read=0.5))
        deadline = time.monotonic() + 10  # well before the held turn goes on by itself (60 s)
        while worker.waiting and time.monotonic() < deadline:  # the server sees them leave
            time.sleep(0.01)
        later = pool.submit(client.post, "/chat/completions", json=chat("Hi", 4))
        while worker.waiting < 1 and not later.done():  # it waits (or was refused)
            time.sleep(0.01)
        engine.release.set()
        answered = [first.result().status_code, later.result().status_code]
    assert answered == [200, 200] and worker.waiting == 0


class FailingEngine(EngineWrapper):
    """The engine, failing every turn as an engine reports a failure (out of memory, damaged weights)."""

    def turn(self, *args: Any) -> Iterator[Event]:
        yield TurnFailed("out of memory on cpu: use a smaller quant, fewer canvases, or --device cpu")


def test_a_failed_turn_is_a_server_error(demo):
    with serving(FailingEngine(demo)) as client:
        response = client.post("/chat/completions", json=chat("Hi", 1))
        sent = stream(client, chat("Hi", 1))
    assert response.status_code == 500
    error = {"message": "out of memory on cpu: use a smaller quant, fewer canvases, or --device cpu",
             "type": "server_error", "code": 500}
    assert response.json() == {"error": error}
    assert [(name, json.loads(data) if data != "[DONE]" else data) for name, data in sent] == [
        (None, {"error": error}), (None, "[DONE]")]


def serve_command(*argv: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dg_chat.cli", "serve", "-m", str(DEMO), *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_the_command_prints_its_url_and_stops_on_ctrl_c():
    token = "tok-" + "x" * 20
    process = serve_command("--port", "0", "--steps", "3", "--token-env", "TEST_SERVE_TOKEN",
                            env={**os.environ, "TEST_SERVE_TOKEN": token})
    try:
        line = process.stdout.readline()
        match = re.fullmatch(r"dg-chat: serving demo at (http://127\.0\.0\.1:\d+/v1) \(Ctrl\+C stops\)\n", line)
        assert match, line + process.stderr.read() if process.poll() is not None else line
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=match.group(1), timeout=120, headers=headers) as client:
            assert client.get("/models").json()["data"][0]["id"] == "demo"
            assert client.get("/models", headers={"host": "gpu-box.lan"}).status_code == 200  # the token is enough
            assert client.post("/chat/completions", json=chat("Hi", 1)).status_code == 200
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0
    assert err == "dg-chat: server stopped\n" and out == ""
    assert token not in line + out + err


def test_sigterm_stops_the_command_as_ctrl_c_does_with_sigterms_status():
    process = serve_command("--port", "0", "--steps", "3")
    try:
        line = process.stdout.readline()
        assert line.startswith("dg-chat: serving demo at "), line + process.stderr.read() if process.poll() else line
        base = line.split(" at ")[1].split(" ")[0]
        with httpx.Client(base_url=base, timeout=120) as client:  # on loopback without a token: localhost only
            assert client.get("/models").status_code == 200
            assert client.get("/models", headers={"host": "rebound.example"}).status_code == 403
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143  # as the TUI's (dg_chat/tui/signals.py)
    assert err == "dg-chat: server stopped\n" and out == ""


def test_a_port_in_use_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = serve_command("--port", str(port))
        out, err = process.communicate(timeout=120)
    assert process.returncode == 1 and out == ""
    assert err == f"dg-chat: error: port {port} on 127.0.0.1 is in use: stop what uses it or choose another --port\n"
