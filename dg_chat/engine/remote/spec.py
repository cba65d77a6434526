"""The model spec of a remote model, `openai:<base-url>#<model>`, and its API key.

The key is read from the environment variable named by the `api_key_env` setting when a
connection is made; it is never part of a spec, a label, a setting or a message. A spec is stored
with every chat's settings and answer, so it may hold no password either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from dg_chat.errors import DgChatError

PREFIX = "openai:"
EXAMPLE = "openai:http://127.0.0.1:8000/v1#google/diffusiongemma-26B-A4B-it"


@dataclass(frozen=True, slots=True)
class RemoteSpec:
    base_url: str
    """The API root, e.g. http://127.0.0.1:8000/v1 (requests go to <base_url>/chat/completions)."""
    model: str
    """The served model's id; empty: the first model the server lists."""

    @property
    def host(self) -> str:
        """host:port of the server (what the status bar shows as the device)."""
        return urlsplit(self.base_url).netloc

    def label(self, model: str | None = None) -> str:
        """The spec as recorded and shown, naming `model` (default: the spec's own)."""
        name = self.model if model is None else model
        return f"{PREFIX}{self.base_url}#{name}" if name else f"{PREFIX}{self.base_url}"


def is_remote(spec: str) -> bool:
    return spec.strip().lower().startswith(PREFIX)


def parse_remote(spec: str) -> RemoteSpec:
    """`openai:<base-url>[#<model>]` -> RemoteSpec; a DgChatError that shows the expected form."""
    url, _, model = spec.strip()[len(PREFIX):].partition("#")
    url = url.strip()
    problem = "" if url else "the URL is missing"
    try:
        parts = urlsplit(url)
        if url and not (parts.scheme in ("http", "https") and parts.hostname):
            problem = f"{url!r} is not an http(s) URL"
        parts.port  # noqa: B018 - reading it checks it
    except ValueError:  # an unclosed [IPv6] host, or a port that is not a number in 0-65535
        problem = problem or f"{url!r} has no valid host and port (a port is from 0 to 65535)"
    if problem:
        raise DgChatError(f"a remote model is openai:<base-url>#<model>, e.g. {EXAMPLE}; {problem}")
    if parts.username is not None or parts.password is not None:
        raise DgChatError("a remote model's URL must not hold a user or password (specs are saved with every "
                          "chat): put the API key in the environment variable named by the api_key_env setting")
    return RemoteSpec(url.rstrip("/"), model.strip())


def api_key(variable: str) -> str | None:
    """The API key from the environment variable `variable` (the `api_key_env` setting); None if unset.
    Spaces around it (a line end copied from a file) are dropped; a key that an HTTP header cannot
    carry is a one-line error that does not show it (an HTTP library's message would)."""
    key = os.environ.get(variable, "").strip() if variable else ""
    if key and not (key.isascii() and key.isprintable()):
        raise DgChatError(f"the API key in {variable} holds characters an HTTP header cannot carry (non-ASCII "
                          "or control characters); set the variable to the key alone")
    return key or None
