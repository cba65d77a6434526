"""`dg-chat serve`: the model as an OpenAI-compatible server (the protocol: `dg_chat.serve`).

Binds first (a port in use is a one-line error before the slow model load), loads the model,
prints one line with the URL once it accepts connections, and serves until Ctrl+C or SIGTERM,
which stop the running turns, close the engine and end with one line (SIGTERM with status 143, as
the TUI does).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from contextlib import ExitStack, nullcontext
from pathlib import Path

from rich.console import Console

from dg_chat.config import Settings
from dg_chat.engine.engine import Engine
from dg_chat.engine.loader import load_engine
from dg_chat.engine.remote.spec import api_key
from dg_chat.errors import DgChatError, DgChatWarning
from dg_chat.serve.app import create_app
from dg_chat.serve.server import Server, is_loopback, listen, url
from dg_chat.serve.worker import EngineWorker

EXIT_TERMINATED = 128 + signal.SIGTERM
"""The exit status after SIGTERM (143), as the TUI's (dg_chat/tui/signals.py)."""


class Terminated(Exception):
    """SIGTERM arrived: the server stops as on Ctrl+C."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated


def bearer_token(env_name: str | None) -> str | None:
    """The token named by --token-env (None without the option); never printed. Checked as clients'
    API keys are: one an HTTP header cannot carry no client could send."""
    if env_name is None:
        return None
    token = api_key(env_name)
    if not token:
        raise DgChatError(f"--token-env {env_name}: the environment variable {env_name} is not set or empty")
    return token


def model_id(settings: Settings, engine: Engine) -> str:
    """The model's name on the server: the catalog name given with -m (demo, diffusiongemma:Q4_K_M),
    else the GGUF file's name without .gguf."""
    spec = settings.model
    if spec and not spec.endswith(".gguf") and "/" not in spec and os.sep not in spec:
        return spec
    return Path(engine.file).stem


def run(args: argparse.Namespace) -> int:
    settings = args.settings
    if not 0 <= args.port <= 65535:
        raise DgChatError(f"--port {args.port}: a port is from 0 to 65535")
    token = bearer_token(args.token_env)
    err = Console(stderr=True, highlight=False)
    with ExitStack() as stack:
        sock = stack.enter_context(listen(args.host, args.port))
        if token is None and not is_loopback(sock):
            warnings.warn(f"serving on {args.host} without a bearer token (--token-env): anyone who can reach "
                          "this port can use the model", DgChatWarning, stacklevel=1)
        with err.status("loading the model…", spinner="dots") if err.is_terminal else nullcontext():
            engine = load_engine(settings)
        stack.callback(engine.close)
        if not isinstance(engine, Engine):
            raise DgChatError(f"dg-chat serve serves a local model; {settings.model} is one on a server already")
        worker = EngineWorker(engine)
        stack.callback(worker.close)
        name = model_id(settings, engine)
        app = create_app(worker, name, settings.sampler, token, local_only=token is None and is_loopback(sock))
        server = Server(app, worker,
                        on_ready=lambda: print(f"dg-chat: serving {name} at {url(sock)} (Ctrl+C stops)", flush=True))
        status = 0
        # uvicorn stops on the first Ctrl+C or SIGTERM, then raises the signal again for the
        # handler that was there before: KeyboardInterrupt, or Terminated from this one
        previous = signal.signal(signal.SIGTERM, _terminated)
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
        except Terminated:
            status = EXIT_TERMINATED
        finally:
            signal.signal(signal.SIGTERM, previous)
    print("dg-chat: server stopped", file=sys.stderr)
    return status
