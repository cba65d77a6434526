"""The Starlette application of `dg-chat serve`: `GET /v1/models`, `POST /v1/chat/completions`
(whole or streamed), an optional bearer token, and every error in OpenAI's JSON shape."""

from __future__ import annotations

import hmac
import ipaddress
import json
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from dg_chat.config import SamplerSettings
from dg_chat.engine.events import BlockCommitted, CanvasStep, TurnFailed, TurnFinished
from dg_chat.serve.protocol import (
    CANVAS_EVENT,
    DONE,
    ChatRequest,
    Deltas,
    Reply,
    RequestError,
    canvas_event,
    error_body,
    finish_reason,
    parse_request,
    sse,
)
from dg_chat.serve.worker import Busy, EngineWorker, Job

STOPPED = "the server stopped the answer before its end (it is shutting down)"
MAX_BODY_BYTES = 16 * 2**20
"""The largest request body read: far more than a prompt that fits any model's context (128k tokens
of text escaped in JSON is a few MB); a larger one is refused as it arrives, not held in memory."""


def error_response(status: int, message: str, kind: str = "invalid_request_error",
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, kind), status_code=status, headers=headers)


class BearerToken:
    """ASGI middleware: every request carries `Authorization: Bearer <token>`, else 401. The
    token is compared in constant time and never logged or echoed."""

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scheme, _, given = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
                response = error_response(401, "a missing or wrong bearer token (send Authorization: Bearer <token>)",
                                          "authentication_error", {"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class LocalHostOnly:
    """ASGI middleware of a server on a loopback address without a token: the Host header must name
    this machine (localhost or a loopback address), else 403. Otherwise a web page whose own name
    resolves to 127.0.0.1 (DNS rebinding) could use the model and read its answers."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not names_this_machine(host):
                response = error_response(403, f"this server answers requests for localhost only, not for "
                                               f"{host[:100]!r} (serve with --token-env to be reached by other names)",
                                          "permission_error")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def names_this_machine(host: str) -> bool:
    """Whether a Host header ("localhost:8080", "[::1]:8080", "127.0.0.1") names a loopback address."""
    try:
        name = urlsplit(f"//{host}").hostname or ""
    except ValueError:  # an unclosed "[", say
        return False
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@asynccontextmanager
async def stopped_on_disconnect(receive: Receive, cancel: threading.Event) -> AsyncIterator[None]:
    """While inside, a client that goes away sets `cancel`: the engine stops its turn at the next
    step (or skips it while queued). Leaving sets it too: a finished turn ignores it."""

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        cancel.set()

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        try:
            yield
        finally:
            cancel.set()
            group.cancel_scope.cancel()


class TurnResponse:
    """The ASGI response of one queued turn, once the engine takes it: a 400 if it refuses the
    prompt, else the whole answer as one `chat.completion` or a stream of SSE events."""

    def __init__(self, job: Job, request: ChatRequest, routes: Routes):
        self.job, self.request, self.routes = job, request, routes
        self.reply = Reply(routes.model)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with stopped_on_disconnect(receive, self.job.cancel):
            if (refused := await self.job.taken()) is not None:
                await error_response(400, refused)(scope, receive, send)
                return
            if not self.request.stream:
                await (await self.whole())(scope, receive, send)
                return
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]})
            async for text in self.events():
                await send({"type": "http.response.body", "body": text.encode(), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def whole(self) -> Response:
        async for event in self.job.events():
            if isinstance(event, TurnFinished) and not event.stopped:
                return JSONResponse(self.reply.completion(event, finish_reason(event)))
            if isinstance(event, TurnFailed):
                return error_response(500, event.error, "server_error")
        return error_response(503, STOPPED, "server_error")

    async def events(self) -> AsyncIterator[str]:
        """The SSE events: canvas steps when asked, a chunk per block (the last one waits for the
        turn's end, which gives its finish_reason and usage), then [DONE]; an error event instead
        of the last chunk if the turn fails or is stopped."""
        deltas, last = Deltas(), None
        async for event in self.job.events():
            if isinstance(event, CanvasStep) and self.request.canvas:
                yield sse(canvas_event(event, self.routes.piece, self.routes.end_ids), CANVAS_EVENT)
            elif isinstance(event, BlockCommitted) and event.final:
                last = event
            elif isinstance(event, BlockCommitted):
                yield sse(self.reply.chunk(deltas.next(event, last=False), event))
            elif isinstance(event, TurnFinished) and not event.stopped and last is not None:
                finish = finish_reason(event)
                stats = event.stats if self.request.include_usage else None
                yield sse(self.reply.chunk(deltas.next(last, last=True), last, finish, stats))
                yield DONE
                return
            elif isinstance(event, TurnFailed):
                yield sse(error_body(500, event.error, "server_error"))
                yield DONE
                return
        yield sse(error_body(503, STOPPED, "server_error"))
        yield DONE


class Routes:
    """The routes over one EngineWorker, the model's id and the server's sampler defaults."""

    def __init__(self, worker: EngineWorker, model: str, defaults: SamplerSettings):
        self.worker, self.model, self.defaults = worker, model, defaults
        self.piece = worker.engine.tokenizer.piece
        self.end_ids = worker.engine.end_ids
        self.started = int(time.time())

    async def models(self, request: Request) -> JSONResponse:
        backend = self.worker.engine.backend
        return JSONResponse({"object": "list", "data": [{
            "id": self.model, "object": "model", "created": self.started, "owned_by": "dg-chat",
            "max_model_len": backend.context_length}]})

    async def chat_completions(self, request: Request) -> Response | TurnResponse:
        try:
            chat = await self._parse(request)
            job = self.worker.submit(chat.messages, chat.sampler)  # its prompt is checked on the engine's thread
        except RequestError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        except Busy as exc:
            return error_response(429, str(exc), "rate_limit_error")
        return TurnResponse(job, chat, self)

    async def _parse(self, request: Request) -> ChatRequest:
        # a web page can send a form or text/plain to any address without asking first; JSON it cannot
        if request.headers.get("content-type", "").partition(";")[0].strip().lower() != "application/json":
            raise RequestError(415, "send the request body as JSON, with the header Content-Type: application/json")
        try:
            body = json.loads(await _body(request))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise RequestError(400, f"the request body is not valid JSON: {exc}") from None
        return parse_request(body, model=self.model, defaults=self.defaults,
                             canvas_length=self.worker.engine.backend.canvas_length)


async def _body(request: Request) -> bytes:
    """The request's body, refused with a 413 past MAX_BODY_BYTES (as declared, or as it arrives)."""
    too_large = RequestError(413, f"the request body is over {MAX_BODY_BYTES:,} bytes, more than any prompt that "
                                  "fits the model's context")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    message = {404: f"no such endpoint: {request.url.path} (this server has /v1/models and /v1/chat/completions)",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, exc.detail)
    return error_response(exc.status_code, message, headers=exc.headers)


def create_app(worker: EngineWorker, model: str, defaults: SamplerSettings, token: str | None = None, *,
               local_only: bool = False) -> Starlette:
    """The server's ASGI app; `token`: the bearer token every request must carry (None: none);
    `local_only`: answer only requests whose Host names this machine (see LocalHostOnly)."""
    api = Routes(worker, model, defaults)
    middleware = [Middleware(LocalHostOnly)] if local_only else []
    if token:
        middleware.append(Middleware(BearerToken, token=token))
    return Starlette(
        routes=[Route("/v1/models", api.models, methods=["GET"]),
                Route("/v1/chat/completions", api.chat_completions, methods=["POST"])],
        middleware=middleware,
        exception_handlers={HTTPException: _http_error})
