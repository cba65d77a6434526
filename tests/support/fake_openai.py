"""A small vLLM-style OpenAI-compatible server for tests, run for real on 127.0.0.1 in a thread.

It streams one `chat.completion.chunk` per canvas (block), thinking as `reasoning_content`, and
when a request asks for dg-chat's extension (and `canvas` is on) the denoising steps of each block
as `dg_chat.canvas` events before its chunk. It can be told to fail in each way a real server
fails (`fail`), and to hold before a block until released (`hold_before`), to test a stop. A
`strict` one refuses request fields that OpenAI's API does not have: with a 400, as OpenAI's does
("openai"), or with a 422 listing each field, as a FastAPI server whose request model forbids
extra fields does ("fastapi").
"""

from __future__ import annotations

import json
import math
import select
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

MODEL = "google/diffusiongemma-26B-A4B-it"
CANVAS = 8
FAILURES = ("400", "401", "403", "404", "429", "500", "cut", "cut-before", "ends", "malformed", "not-sse",
            "error-event", "redirect", "endless-error", "endless-event", "html-error")
OPENAI_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "seed", "max_tokens",
                           "max_completion_tokens", "temperature", "top_p", "n", "stop", "user"})
"""The request fields a strict server knows."""


@dataclass
class Reply:
    blocks: list[tuple[str, str]] = field(default_factory=lambda: [("", "The sky is "), ("", "blue.")])
    """(thinking, answer) text of each block."""
    steps: int = 3
    canvas: bool = True
    """Send dg_chat.canvas events when the request asks for them."""
    usage: tuple[int, int] | None = (12, 9)
    """prompt_tokens, completion_tokens; None: no usage chunk, as servers that do not count send."""
    extension: bool = True
    """Mark each block's chunk with dg-chat's extension (`dg_chat`: block, steps) as dg-chat's own
    server does; False: plain chunks, as vLLM sends."""
    pings: bool = False
    """Send a keep-alive event (`event: ping`, data that is not JSON) before each block."""
    finish: str = "stop"
    """finish_reason of the last block ("length": cut at a limit)."""


class FakeOpenAI:
    def __init__(self, *, key: str | None = None, reply: Reply | None = None,
                 strict: Literal["openai", "fastapi"] | None = None) -> None:
        self.key = key
        self.strict = strict
        self.reply = reply or Reply()
        self.fail: str | None = None
        self.hold_before: int | None = None
        """Block index before which the stream waits until `release` is set (or the client leaves)."""
        self.release = threading.Event()
        self.holding = threading.Event()
        self.client_left = threading.Event()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._server = _QuietServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def spec(self, model: str = MODEL) -> str:
        return f"openai:{self.url}#{model}"

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that left mid-stream (a stop, a test's end) is no error of the server


def _handler(server: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self._refused():
                return
            if self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
            else:
                self._json(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            server.requests.append(body)
            server.headers.append(dict(self.headers))
            if self._refused():
                return
            if self.path != "/v1/chat/completions":
                self._json(404, {"detail": "Not Found"})
            elif server.strict == "openai" and (unknown := sorted(body.keys() - OPENAI_FIELDS)):
                plural = "s" if len(unknown) > 1 else ""
                self._error(400, f"Unrecognized request argument{plural} supplied: {', '.join(unknown)}",
                            "invalid_request_error")
            elif server.strict == "fastapi" and (unknown := sorted(body.keys() - OPENAI_FIELDS)):
                self._json(422, {"detail": [{"type": "extra_forbidden", "loc": ["body", name],
                                             "msg": "Extra inputs are not permitted", "input": body[name]}
                                            for name in unknown]})
            elif server.fail == "400":
                self._error(400, "This model's maximum context length is 8192 tokens", "invalid_request_error")
            elif server.fail == "404" or body.get("model") != MODEL:
                self._error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
            elif server.fail == "429":
                self._error(429, "Rate limit reached: 3 requests per minute", "RateLimitError")
            elif server.fail == "500":
                self._error(500, "CUDA error: an illegal memory access was encountered", "InternalServerError")
            elif server.fail == "not-sse":
                self._raw(200, b"<html>proxy login</html>", "text/html")
            elif server.fail == "redirect":
                self.send_response(301)
                self.send_header("Location", "https://llm.example.com/v1/chat/completions")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif server.fail == "html-error":  # nginx's page, as a proxy in front of a server that is down sends it
                self._raw(502, b"<html>\r\n<head><title>502 Bad Gateway &amp; co</title></head>\r\n<body>\r\n"
                               b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
                               b"</body>\r\n</html>\r\n", "text/html")
            elif server.fail == "endless-error":
                self._endless_error_page()
            else:
                self._stream(body)

        def _refused(self) -> bool:
            if server.fail in ("401", "403"):  # echoes the key, as some servers do: the client must mask it
                presented = self.headers.get("Authorization", "").removeprefix("Bearer ")
                self._error(int(server.fail), f"Incorrect API key provided: {presented}", "AuthenticationError")
                return True
            if server.key is not None and self.headers.get("Authorization") != f"Bearer {server.key}":
                self._error(401, "Missing or invalid API key", "AuthenticationError")
                return True
            return False

        def _error(self, status: int, message: str, kind: str) -> None:
            self._json(status, {"error": {"message": message, "type": kind, "code": status}})

        def _json(self, status: int, data: Any) -> None:
            self._raw(status, json.dumps(data).encode(), "application/json")

        def _raw(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _endless_error_page(self) -> None:
            """A 502 whose HTML body never ends: a client must not wait for (or hold) all of it."""
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.close_connection = True
            try:
                self._send("<html><body>Bad gateway ")
                while True:
                    self._send("<p>upstream unavailable</p>" * 100)
            except OSError:  # the client has read what it wanted and left
                pass

        def _endless_event(self) -> None:
            """An event whose data line never ends (a broken proxy, not a server)."""
            self.close_connection = True
            try:
                self._send("data: ")
                while True:
                    self._send("x" * 65536)
            except OSError:  # the client has refused it and left
                pass

        def _send(self, text: str) -> None:
            data = text.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": MODEL,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            self._send(f"data: {json.dumps(chunk)}\n\n")

        def _stream(self, body: dict[str, Any]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            reply = server.reply
            canvas = reply.canvas and bool((body.get("dg_chat") or {}).get("canvas"))
            self._chunk({"role": "assistant", "content": ""})
            if server.fail == "endless-event":
                self._endless_event()
                return
            if server.fail == "cut-before":
                self.close_connection = True
                return  # the connection ends before the first block
            for block, (thinking, answer) in enumerate(reply.blocks):
                if block == server.hold_before and not self._held():
                    return
                if reply.pings:
                    self._send("event: ping\ndata: keepalive\n\n")
                if canvas:
                    self._canvas(block, thinking + answer, reply.steps)
                last = block == len(reply.blocks) - 1
                delta = {"content": answer} | ({"reasoning_content": thinking} if thinking else {})
                marks = {"dg_chat": {"block": block, "steps": reply.steps}} if reply.extension else {}
                self._chunk(delta, reply.finish if last else None, **marks)
                if server.fail == "cut":
                    self.close_connection = True
                    return  # no final chunk of the chunked body: the connection just ends
                if server.fail == "ends":
                    self.wfile.write(b"0\r\n\r\n")
                    return  # a complete body, but the answer has no end (no finish_reason, no [DONE])
                if server.fail == "malformed":
                    self._send("data: {\"choices\": [{\"delta\": \n\n")
                if server.fail == "error-event":
                    self._send('event: error\ndata: {"error": {"message": "worker died"}}\n\n')
            if reply.usage is not None:
                usage = dict(zip(("prompt_tokens", "completion_tokens"), reply.usage, strict=True))
                self._send(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n")
            self._send("data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")

        def _canvas(self, block: int, text: str, steps: int) -> None:
            words = [w + " " for w in text.split()][:CANVAS]
            pieces = (words + ["<pad>"] * CANVAS)[:CANVAS]
            previous: list[str] = []
            for step in range(1, steps + 1):
                kept = math.ceil(CANVAS * step / steps)
                now = pieces[:kept] + [f"~{i}" for i in range(kept, CANVAS)]
                event = {"block": block, "step": step, "max_steps": steps, "pieces": now,
                         "end": [piece == "<pad>" for piece in now],  # the end-of-turn token, as dg-chat marks it
                         "accepted": [i < kept for i in range(CANVAS)],
                         "changed": [not previous or previous[i] != now[i] for i in range(CANVAS)],
                         "mean_entropy": 1.0 - step / steps}
                previous = now
                self._send(f"event: dg_chat.canvas\ndata: {json.dumps(event)}\n\n")

        def _held(self) -> bool:
            """Wait for `release`; False if the client closed the connection meanwhile."""
            server.holding.set()
            while not server.release.wait(0.02):
                readable, _, _ = select.select([self.connection], [], [], 0)
                if readable and not self.connection.recv(1):
                    server.client_left.set()
                    return False
            return True

    return Handler
