"""The listening socket and the uvicorn server of `dg-chat serve`.

The socket is bound before the model loads, so that a port in use is a one-line error at once;
uvicorn then serves on it quietly (warnings and errors only: no access log, no banner).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from dg_chat.errors import DgChatError
from dg_chat.serve.worker import EngineWorker

GRACE_SECONDS = 5
"""How long a stopping server waits for open responses (their turns are stopped first)."""


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (port 0: a free one)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise DgChatError(f"cannot listen on {host}: {getattr(exc, 'strerror', None) or exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise DgChatError(f"port {port} on {host} is in use: stop what uses it or choose another --port") from None
        raise DgChatError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def url(sock: socket.socket) -> str:
    """The server's base URL, http://HOST:PORT/v1."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


def is_loopback(sock: socket.socket) -> bool:
    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback


class Server(uvicorn.Server):
    """uvicorn serving one app quietly; `on_ready` is called once it accepts connections. When it
    stops (Ctrl+C, SIGTERM, `should_exit`) the turns stop first, so open streams end at once
    instead of holding the shutdown up."""

    def __init__(self, app: ASGIApp, worker: EngineWorker, on_ready: Callable[[], None] = lambda: None):
        super().__init__(uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="off",
                                        timeout_graceful_shutdown=GRACE_SECONDS))
        self.worker = worker
        self.on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.worker.cancel_all()
        await super().shutdown(sockets)


@contextmanager
def running(app: ASGIApp, worker: EngineWorker, sock: socket.socket) -> Iterator[Server]:
    """The server on `sock` in a background thread while inside (tests, benchmarks)."""
    ready = threading.Event()
    server = Server(app, worker, on_ready=ready.set)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="dg-chat-serve", daemon=True)
    thread.start()
    try:
        if not ready.wait(60):
            raise DgChatError("the server did not start within 60 s")
        yield server
    finally:
        server.should_exit = True
        thread.join()
