"""HTTP to an OpenAI-compatible server: `GET /models` and a streamed `POST /chat/completions`.

Every failure is a `RemoteError` whose message is one line, names the server (never the API key:
any echo of it in a server's message is masked) and says what to do. A stop must not wait for
the server's next chunk (vLLM sends one per canvas), nor for a server that has not answered at all
yet, nor for a connect that hangs (a firewall that drops packets): a request is opened on a thread
of its own, which a stop leaves behind, and from the moment its connection is made a set `cancel`
shuts its socket down, which ends a blocked read at once and tells the server to stop. (Each
request has a connection of its own, so that the socket of every request is seen being made.)
"""

from __future__ import annotations

import html
import json
import re
import socket
import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

from dg_chat.engine.remote.spec import RemoteSpec
from dg_chat.errors import DgChatError

CONNECT_SECONDS = 10.0
READ_SECONDS = 300.0
"""Longest silence of a server while it answers (a queue on a busy server can be long)."""
LIST_SECONDS = 30.0
"""Longest wait for the model list (`doctor`, a spec without a model): no model runs for it."""
MESSAGE_CHARS = 200
"""A server's error message is cut to this many characters."""
ERROR_BODY_BYTES = 64 * 1024
"""Of an error's body only this much is read (a proxy's error page can be huge; its message is cut anyway)."""
MODEL_LIST_BYTES = 8 * 2**20
"""The largest model list read (thousands of models; a larger answer is not a model list)."""
EVENT_BYTES = 8 * 2**20
"""The most of a stream read while one event is still unfinished (a canvas event is ~10 kB): past
it the stream is refused, not held in memory (an endless line, data lines that never end)."""


class RemoteError(DgChatError):
    """A failure of the server or the connection; one line."""

    def __init__(self, message: str, status: int | None = None, said: str = "") -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status the server answered with; None if it did not answer."""
        self.said = said
        """The server's own error message, whole (at most ERROR_BODY_BYTES, the key masked); "" if none."""


class StreamCut(RemoteError):
    """The stream ended before the answer did (the engine says whether a partial answer is kept)."""


class RemoteClient:
    """One server, one model spec; the API key goes into the Authorization header and nowhere else."""

    def __init__(self, spec: RemoteSpec, key: str | None, key_env: str) -> None:
        self.spec = spec
        self.label = spec.label()
        self._key = key
        # the key where it stands as a word of its own: a short key ("e") must not mask letters of words
        self._key_echo = re.compile(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])") if key else None
        self._key_env = key_env
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeout = httpx.Timeout(READ_SECONDS, connect=CONNECT_SECONDS)
        self._http = httpx.Client(base_url=spec.base_url + "/", headers=headers, timeout=timeout,
                                  limits=httpx.Limits(max_keepalive_connections=0))

    def models(self) -> list[str]:
        """The ids of the models the server lists at /models."""
        timeout = httpx.Timeout(LIST_SECONDS, connect=CONNECT_SECONDS)
        with self._errors(read_seconds=LIST_SECONDS), self._http.stream("GET", "models", timeout=timeout) as response:
            self._check(response)
            body = _head(response, MODEL_LIST_BYTES + 1)
        try:
            if len(body) > MODEL_LIST_BYTES:
                raise ValueError
            return [str(model["id"]) for model in json.loads(body)["data"]]
        except (ValueError, KeyError, TypeError):
            text = body[:ERROR_BODY_BYTES].decode("utf-8", errors="replace")
            raise RemoteError(f"{self.spec.label('')}/models did not answer with a model list "
                              f"({self.clip(text) or 'empty'}); is the base URL right?") from None

    def stream(self, body: dict[str, Any],
               cancel: threading.Event | None = None) -> Generator[ServerSentEvent, None, None]:
        """The server-sent events of a streamed chat completion; returns quietly once `cancel` is set
        (the connection is closed), raises StreamCut if the connection breaks."""
        connection = _Connection(cancel)
        request = self._http.build_request("POST", "chat/completions", json=body,
                                           headers={"Accept": "text/event-stream"},
                                           extensions={"trace": connection.trace})
        with self._errors(cancel), _shut_on(cancel, connection):
            response = self._open(request, cancel)
            if response is None:
                return  # stopped while connecting
            try:
                connection.answered(response)
                self._check(response)
                response.stream = budget = _EventBudget(response.stream, self.label)
                for event in EventSource(response).iter_sse():
                    budget.unfinished = 0
                    yield event
            except SSEError:
                raise RemoteError(f"{self.label} did not answer with an event stream (Content-Type "
                                  f"{response.headers.get('content-type', 'missing')!r})") from None
            except httpx.TransportError as exc:
                if cancel is None or not cancel.is_set():
                    raise StreamCut(f"the stream from {self.label} was cut mid-answer "
                                    f"({self.clip(str(exc)) or type(exc).__name__})") from None
            finally:
                response.close()

    def _open(self, request: httpx.Request, cancel: threading.Event | None) -> httpx.Response | None:
        """Send `request`; its response once the headers have come (the body not read yet), or None
        if `cancel` was set before: the send goes on on its own thread until it connects (and
        `_Connection` shuts the socket down) or times out, and closes what it opened."""
        if cancel is None:
            return self._http.send(request, stream=True)
        lock, opened, left = threading.Lock(), threading.Event(), threading.Event()
        outcome: list[httpx.Response | Exception] = []

        def send() -> None:
            try:
                result: httpx.Response | Exception = self._http.send(request, stream=True)
            except Exception as exc:  # noqa: BLE001 - raised by the caller, which has not left
                result = exc
            with lock:
                if left.is_set():
                    if isinstance(result, httpx.Response):
                        result.close()
                    return
                outcome.append(result)
                opened.set()

        threading.Thread(target=send, name="dg-chat-remote-open", daemon=True).start()
        try:
            while not opened.wait(0.05) and not cancel.is_set():
                pass
        finally:  # a stop, or an interrupt of the waiting thread itself
            with lock:
                if not opened.is_set():
                    left.set()
        if not opened.is_set():
            return None
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    def close(self) -> None:
        self._http.close()

    @contextmanager
    def _errors(self, cancel: threading.Event | None = None, read_seconds: float = READ_SECONDS) -> Iterator[None]:
        """Connection failures as one line each; none once `cancel` is set (the stop ended the connection)."""
        try:
            yield
        except httpx.TransportError as exc:
            if cancel is not None and cancel.is_set():
                return
            raise self._one_line(exc, read_seconds) from None

    def _one_line(self, exc: httpx.TransportError, read_seconds: float) -> RemoteError:
        if isinstance(exc, httpx.TimeoutException):
            what = "did not connect" if isinstance(exc, httpx.ConnectTimeout) else "stopped answering"
            seconds = CONNECT_SECONDS if isinstance(exc, httpx.ConnectTimeout) else read_seconds
            return RemoteError(f"{self.label} {what} within {seconds:.0f} s; is the server up?")
        if isinstance(exc, httpx.ConnectError):
            return RemoteError(f"cannot reach {self.label} ({self.clip(str(exc)) or 'connection failed'}); "
                               "is the server running at that address?")
        return RemoteError(f"the connection to {self.label} failed ({self.clip(str(exc)) or type(exc).__name__})")

    def _check(self, response: httpx.Response) -> None:
        """A RemoteError for a redirect or an error status (with the server's own message); reads at
        most ERROR_BODY_BYTES of the body."""
        if response.is_redirect:  # not followed: the API key would go along to wherever it points
            location = self.clip(response.headers.get("location", ""))
            raise RemoteError(f"{self.label} redirects to {location} ({response.status_code}); use that as the "
                              "base URL", response.status_code)
        if not response.is_error:
            return
        status = f"{response.status_code} {response.reason_phrase}".strip()
        said = self.mask(server_message(_head(response, ERROR_BODY_BYTES).decode("utf-8", errors="replace")))
        shown = self.clip(said)
        raise RemoteError(self._status_message(response.status_code, f"{status}: {shown}" if shown else status),
                          response.status_code, said)

    def _status_message(self, code: int, status: str) -> str:
        if code in (401, 403):
            if self._key is None:
                return (f"{self.label} wants an API key ({status}); put it in the environment variable "
                        f"{self._key_env} (the api_key_env setting names the variable)")
            return f"{self.label} refused the API key from {self._key_env} ({status})"
        if code == 404:
            return (f"{self.label}: not found ({status}); check the model name (`dg-chat doctor` lists the "
                    "served ones) and that the base URL ends in /v1")
        if code == 429:
            return f"{self.label} is busy ({status}); try again later"
        if code >= 500:
            return f"{self.label} failed ({status})"
        return f"{self.label} refused the request ({status})"

    def mask(self, text: str) -> str:
        """text with every echo of the API key masked."""
        return text if self._key_echo is None else self._key_echo.sub("***", text)

    def clip(self, text: str) -> str:
        """One line of at most MESSAGE_CHARS characters, with the API key masked."""
        text = " ".join(self.mask(text).split())
        return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 1] + "…"


def _head(response: httpx.Response, limit: int) -> bytes:
    """At most the first `limit` bytes of a streamed response's body (the rest is left unread)."""
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) >= limit:
            break
    return bytes(data[:limit])


_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]*>")


def server_message(text: str) -> str:
    """The message of an OpenAI-style error body or event ({"error": {"message": ...}}), FastAPI's
    "detail", a proxy's HTML error page (its title, or its text without the markup), or the text itself."""
    try:
        data = json.loads(text)
    except ValueError:
        if text.lstrip()[:1] == "<":
            title = _HTML_TITLE.search(text)
            return html.unescape(title[1] if title else _HTML_TAG.sub(" ", text))
        return text
    if isinstance(data, dict):
        error = data.get("error")
        for said in (error.get("message") if isinstance(error, dict) else error, data.get("detail"),
                     data.get("message")):
            if said:
                return said if isinstance(said, str) else json.dumps(said)
    return text


class _Connection:
    """The socket of one request, from the moment it is connected (httpcore's trace extension);
    shut down as soon as it is known if `cancel` is set by then."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self.socket: socket.socket | None = None
        self._cancel = cancel

    def shut(self) -> None:
        """Shut the socket down (a read blocked on it in another thread returns at once); one not
        connected yet is shut when it is."""
        if self.socket is not None:
            with suppress(OSError):
                self.socket.shutdown(socket.SHUT_RDWR)

    def trace(self, name: str, info: dict[str, Any]) -> None:
        """httpcore's trace callback: a direct or proxied connection is made (`connection.`, `socks.`...)."""
        if name.endswith((".connect_tcp.complete", ".start_tls.complete")):
            self._take(info.get("return_value"))

    def answered(self, response: httpx.Response) -> None:
        """The server's answer has begun: its connection's socket, if no trace event named it."""
        if self.socket is None:
            self._take(response.extensions.get("network_stream"))

    def _take(self, stream: Any) -> None:
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            self.socket = sock
            if self._cancel is not None and self._cancel.is_set():  # stopped while it connected
                self.shut()


class _EventBudget(httpx.SyncByteStream):
    """A response's body that fails with a RemoteError once more than EVENT_BYTES have arrived
    since the last event was taken (`unfinished`, which the reader of the events resets)."""

    def __init__(self, stream: httpx.SyncByteStream | httpx.AsyncByteStream, label: str) -> None:
        assert isinstance(stream, httpx.SyncByteStream)
        self._stream, self._label = stream, label
        self.unfinished = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            self.unfinished += len(chunk)
            if self.unfinished > EVENT_BYTES:
                raise RemoteError(f"{self._label} sent over {EVENT_BYTES // 2**20} MiB without ending an event; "
                                  "is it an OpenAI-compatible server?")
            yield chunk

    def close(self) -> None:
        self._stream.close()


@contextmanager
def _shut_on(cancel: threading.Event | None, connection: _Connection) -> Iterator[None]:
    """While inside: once `cancel` is set, shut the socket of `connection` down (`_Connection.shut`:
    a read blocked on it in another thread returns at once, whether or not the server has answered)."""
    if cancel is None:
        yield
        return
    left = threading.Event()

    def watch() -> None:
        while not cancel.wait(0.05):
            if left.is_set():
                return
        connection.shut()

    watcher = threading.Thread(target=watch, name="dg-chat-remote-stop", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        left.set()
        watcher.join()
