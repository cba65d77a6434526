"""A fake Hugging Face Hub on loopback for download tests, and the settings that point
huggingface_hub at it.

It serves what `dg_chat.hub` and huggingface_hub ask for: the model info API with file sizes
and LFS SHA-256 sums (`/api/models/{repo}/revision/{rev}?blobs=true`), file metadata (HEAD on
`/{repo}/resolve/{rev}/{file}` with X-Repo-Commit, X-Linked-Etag and X-Linked-Size) and file
downloads with HTTP range requests. Faults on demand: a connection cut after N bytes, a
published checksum that does not match, a forced HTTP status.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub.constants
import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    commit: str = COMMIT
    published_sha256: dict[str, str] = field(default_factory=dict)
    """Overrides of the sha256 the API publishes (to simulate a corrupt transfer)."""

    def sha256(self, name: str) -> str:
        return self.published_sha256.get(name) or hashlib.sha256(self.files[name]).hexdigest()


@dataclass
class Request:
    method: str
    path: str
    range: str | None


class FakeHub:
    """`with FakeHub() as hub:` serves `hub.repos` on `hub.url` until the block ends."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[Request] = []
        self.cut_after: int | None = None
        """Bytes of the next file body sent before the connection is dropped (once)."""
        self.status: int | None = None
        """Answer every request with this HTTP status."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def file_requests(self) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path]


_API = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/?]+))?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _error(self, status: int, code: str | None = None) -> None:
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _serve(self, body: bool) -> None:
            path = self.path.split("?")[0]
            hub.requests.append(Request(self.command, path, self.headers.get("Range")))
            if hub.status:
                return self._error(hub.status, "GatedRepo" if hub.status == 403 else None)
            if match := _API.match(path):
                return self._model_info(match.group(1))
            if match := _RESOLVE.match(path):
                return self._file(match.group(1), match.group(3), body)
            self._error(404)

        def _model_info(self, repo_id: str) -> None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self._error(404, "RepoNotFound")
            siblings = [
                {"rfilename": name, "size": len(data), "blobId": hashlib.sha1(data).hexdigest(),
                 "lfs": {"size": len(data), "sha256": repo.sha256(name), "pointerSize": 134}}
                for name, data in repo.files.items()
            ]
            payload = json.dumps({"id": repo_id, "sha": repo.commit, "private": False, "siblings": siblings}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _file(self, repo_id: str, name: str, body: bool) -> None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self._error(404, "RepoNotFound")
            if name not in repo.files:
                return self._error(404, "EntryNotFound")
            data = repo.files[name]
            start = 0
            if body and (wanted := re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")):
                start = int(wanted.group(1))
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("X-Linked-Etag", f'"{repo.sha256(name)}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("ETag", f'"{repo.sha256(name)}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            if hub.cut_after is not None:
                cut, hub.cut_after = hub.cut_after, None
                self.wfile.write(data[start:start + cut])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(data[start:])

    return Handler


def point_hub_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, cache: Path, chunk_size: int = 64 * 1024) -> None:
    """Send huggingface_hub to `endpoint` with `cache` as its cache, online, without any token.

    huggingface_hub reads its environment once, at import, into `huggingface_hub.constants`;
    it reads the module attributes on every call, so patching them repoints it reliably.
    """
    c = huggingface_hub.constants
    monkeypatch.setattr(c, "ENDPOINT", endpoint)
    monkeypatch.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(c, "HF_TOKEN_PATH", str(cache / "no-token"))
    monkeypatch.setattr(c, "DOWNLOAD_CHUNK_SIZE", chunk_size)  # several progress updates per tiny file
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)


def write_catalog(models_dir: Path, repo: str, name: str = "tiny", files: str = "tiny-{quant}.gguf",
                  quants: str = "{ Q4_K_M = 0.001, Q8_0 = 0.002 }", architecture: str = "dream") -> Path:
    """A catalog.toml (in `models_dir`, next to where a demo.gguf may go) with one model."""
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / "catalog.toml"
    path.write_text(
        '[demo]\ntitle = "demo"\nfile = "demo.gguf"\n\n'
        f'[[models]]\nname = "{name}"\ntitle = "Tiny test model"\nrepo = "{repo}"\n'
        f'architecture = "{architecture}"\nfiles = "{files}"\nheadroom_gb = 0.0001\nquants = {quants}\n'
    )
    return path


def tiny_gguf(path: Path, architecture: str = "dream", n_floats: int = 256 * 1024) -> bytes:
    """Write a small valid GGUF (one F32 tensor of `n_floats`) and return its bytes."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_tensor("token_embd.weight", np.arange(n_floats, dtype=np.float32).reshape(-1, 256))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()
