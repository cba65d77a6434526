"""Downloads against a fake Hub on loopback: progress, resume, verification, errors, offline use."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dg_chat import hub, paths
from dg_chat.config import Settings
from dg_chat.errors import DgChatError
from dg_chat.gguf.reader import open_gguf
from tests.support.fake_hub import FakeHub, FakeRepo, point_hub_at, tiny_gguf, write_catalog
from tests.support.gguf_edit import split

REPO = "test-org/tiny-GGUF"
Q4, Q8 = "tiny-Q4_K_M.gguf", "tiny-Q8_0.gguf"


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("gguf")
    return {Q4: tiny_gguf(tmp / Q4, n_floats=256 * 1024), Q8: tiny_gguf(tmp / Q8, n_floats=512 * 1024),
            "README.md": b"# tiny\n"}


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "hf-cache"


@pytest.fixture
def fake_hub(monkeypatch, tmp_path, cache, gguf_files):
    write_catalog(tmp_path / "models", REPO)
    monkeypatch.setattr(paths, "repo_models_dir", lambda: tmp_path / "models")
    with FakeHub() as server:
        server.repos[REPO] = FakeRepo(dict(gguf_files))
        point_hub_at(monkeypatch, server.url, cache)
        yield server


def repo_dir(cache: Path) -> Path:
    return cache / "models--test-org--tiny-GGUF"


def leftovers(cache: Path) -> list[str]:
    """Blobs, partial files and snapshot links of the test repo."""
    files = repo_dir(cache).rglob("*")
    return sorted(str(p.relative_to(cache)) for p in files if p.is_symlink() or ("blobs" in p.parts and p.is_file()))


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


def test_pull_shows_progress_verifies_and_lands_in_the_cache(fake_hub, cache, gguf_files):
    events: list[hub.DownloadProgress] = []
    path = hub.pull("tiny:Q4_K_M", Settings(), events.append)

    assert path.read_bytes() == gguf_files[Q4]
    assert path == repo_dir(cache) / "snapshots" / fake_hub.repos[REPO].commit / Q4
    downloads = [e for e in events if e.phase == "download"]
    assert len(downloads) > 5  # one per 64 KB chunk
    assert [e.done for e in downloads] == sorted(e.done for e in downloads)
    assert downloads[-1].done == downloads[-1].total == len(gguf_files[Q4])
    assert events[-1].phase == "verify" and events[-1].done == len(gguf_files[Q4])
    assert not list(repo_dir(cache).rglob("*.incomplete"))
    # found again without the network, by resolve_model and by `models list`
    assert hub.resolve_model("tiny:Q4_K_M", Settings()) == path
    assert [m.spec for m in hub.local_models(Settings())] == ["tiny:Q4_K_M"]


def test_pull_of_a_downloaded_model_does_not_download_again(fake_hub):
    first = hub.pull("tiny:Q4_K_M", Settings())
    fake_hub.requests.clear()
    assert hub.pull("tiny:Q4_K_M", Settings()) == first
    assert fake_hub.file_requests() == []


def test_a_cut_connection_is_resumed_with_a_range_request(fake_hub, gguf_files):
    fake_hub.cut_after = 300_000
    path = hub.pull("tiny:Q4_K_M", Settings())

    assert path.read_bytes() == gguf_files[Q4]
    first, second = fake_hub.file_requests()
    assert first.range is None
    offset = int(second.range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < offset <= 300_000


def test_an_interrupted_pull_resumes_in_a_later_run(fake_hub, cache, gguf_files):
    def stop_midway(progress: hub.DownloadProgress) -> None:
        if progress.phase == "download" and progress.done >= 400_000:
            raise hub.DownloadCancelled("stopped by the test")

    with pytest.raises(hub.DownloadCancelled):
        hub.pull("tiny:Q4_K_M", Settings(), stop_midway)
    (part,) = repo_dir(cache).rglob("*.incomplete")
    kept = part.stat().st_size
    assert 300_000 < kept < len(gguf_files[Q4])
    with pytest.raises(DgChatError, match="not downloaded"):
        hub.resolve_model("tiny:Q4_K_M", Settings())

    fake_hub.requests.clear()
    events: list[hub.DownloadProgress] = []
    path = hub.pull("tiny:Q4_K_M", Settings(), events.append)
    assert path.read_bytes() == gguf_files[Q4]
    (request,) = fake_hub.file_requests()
    assert request.range == f"bytes={kept}-"
    assert events[0].done == kept  # progress starts from what was already there
    assert not part.exists()


def test_a_checksum_mismatch_is_rejected_and_leaves_no_file(fake_hub, cache):
    fake_hub.repos[REPO].published_sha256[Q4] = "0" * 64
    with pytest.raises(DgChatError) as exc:
        hub.pull("tiny:Q4_K_M", Settings())
    assert "corrupt" in one_line(exc) and "deleted" in one_line(exc)
    assert leftovers(cache) == []
    with pytest.raises(DgChatError, match="not downloaded"):
        hub.resolve_model("tiny:Q4_K_M", Settings())


def test_an_unknown_repository_is_one_clear_line(fake_hub, cache):
    del fake_hub.repos[REPO]
    with pytest.raises(DgChatError) as exc:
        hub.pull("tiny:Q4_K_M", Settings())
    assert "test-org/tiny-GGUF: repository not found on the Hub" in one_line(exc)
    assert not cache.exists()


@pytest.mark.parametrize(("status", "expected"), [
    (401, "(HTTP 401); log in with `hf auth login`"), (403, "is gated"), (500, "refused test-org/tiny-GGUF (HTTP 500)"),
])
def test_http_errors_are_one_clear_line(fake_hub, status, expected):
    fake_hub.status = status
    with pytest.raises(DgChatError) as exc:
        hub.pull("tiny:Q4_K_M", Settings())
    assert expected in one_line(exc)


def test_a_quant_missing_from_the_repository(fake_hub):
    del fake_hub.repos[REPO].files[Q8]
    with pytest.raises(DgChatError) as exc:
        hub.pull("tiny:Q8_0", Settings())
    assert "has no file for Q8_0 (looked for tiny-Q8_0.gguf)" in one_line(exc)


def split_q8(fake_hub, tmp_path, gguf_files) -> list[bytes]:
    """Publish Q8_0 as two parts written the way llama.cpp's gguf-split writes them."""
    whole = tmp_path / "whole.gguf"
    whole.write_bytes(gguf_files[Q8])
    parts = split(whole, tmp_path / "parts" / "tiny-Q8_0-00001-of-00002.gguf", 2)
    files = fake_hub.repos[REPO].files
    del files[Q8]
    for part in parts:
        files[f"Q8/{part.name}"] = part.read_bytes()
    return [part.read_bytes() for part in parts]


def test_a_split_quant_downloads_every_part_and_loads_from_the_first(fake_hub, tmp_path, gguf_files):
    parts = split_q8(fake_hub, tmp_path, gguf_files)
    plan = hub.plan_pull("tiny:Q8_0", Settings())
    assert [f.filename for f in plan.files] == ["Q8/tiny-Q8_0-00001-of-00002.gguf", "Q8/tiny-Q8_0-00002-of-00002.gguf"]
    assert plan.size == sum(map(len, parts))
    path = hub.pull("tiny:Q8_0", Settings())
    assert path.name == "tiny-Q8_0-00001-of-00002.gguf" and path.read_bytes() == parts[0]
    assert (path.parent / "tiny-Q8_0-00002-of-00002.gguf").read_bytes() == parts[1]
    with open_gguf(path) as model:
        assert model.split_position() == (1, 2) and "token_embd.weight" in model.tensors
    assert [m.spec for m in hub.local_models(Settings())] == ["tiny:Q8_0"]  # listed once, by its first part
    assert hub.resolve_model("tiny:Q8_0", Settings()) == path
    removal = hub.plan_removal("tiny:Q8_0", Settings())
    assert [p.name for p in removal.paths] == ["tiny-Q8_0-00001-of-00002.gguf", "tiny-Q8_0-00002-of-00002.gguf"]


def test_a_split_quant_with_a_missing_part_is_refused(fake_hub, tmp_path, gguf_files):
    split_q8(fake_hub, tmp_path, gguf_files)
    del fake_hub.repos[REPO].files["Q8/tiny-Q8_0-00002-of-00002.gguf"]
    with pytest.raises(DgChatError) as exc:
        hub.pull("tiny:Q8_0", Settings())
    assert "tiny:Q8_0 is published split in 2 parts, but part 2 is missing" in one_line(exc)


def stop_in(filename: str) -> hub.ProgressCallback:
    """A progress callback that stops the pull once it is downloading `filename`."""
    def stop(progress: hub.DownloadProgress) -> None:
        if progress.filename == filename and progress.phase == "download" and progress.done > 0:
            raise hub.DownloadCancelled("stopped by the test")
    return stop


def test_a_stopped_pull_of_a_split_quant_is_no_model_but_can_be_removed(fake_hub, tmp_path, cache, gguf_files):
    parts = split_q8(fake_hub, tmp_path, gguf_files)
    q4 = hub.pull("tiny:Q4_K_M", Settings())
    second = "Q8/tiny-Q8_0-00002-of-00002.gguf"
    with pytest.raises(hub.DownloadCancelled):
        hub.pull("tiny:Q8_0", Settings(), stop_in(second))
    (repo_dir(cache) / "blobs" / f"{fake_hub.repos[REPO].sha256(second)}.incomplete").write_bytes(parts[1][:80])
    (cached,) = [c for c in hub.cached_quants(Settings()) if c.quant == "Q8_0"]
    assert (len(cached.files), cached.parts, cached.complete, cached.size) == (1, 2, False, len(parts[0]))
    assert [m.spec for m in hub.local_models(Settings())] == ["tiny:Q4_K_M"]
    assert hub.resolve_model("tiny", Settings()) == q4  # not the larger quant that is only half here
    with pytest.raises(DgChatError) as exc:
        hub.resolve_model("tiny:Q8_0", Settings())
    assert one_line(exc) == "tiny:Q8_0 is only partly downloaded (1 of 2 parts); run: dg-chat models pull tiny:Q8_0"
    (stopped,) = hub.unfinished_downloads(Settings())["tiny"]
    assert 0 < stopped.size_on_disk < len(parts[1])

    removal = hub.plan_removal("tiny:Q8_0", Settings())  # its parts here; a partial file names no quant
    assert removal.specs == ["tiny:Q8_0"] and removal.paths == [cached.path] and removal.freed == len(parts[0])
    removal.execute()
    with pytest.raises(DgChatError) as exc:
        hub.plan_removal("tiny:Q8_0", Settings())
    assert one_line(exc) == ("tiny:Q8_0 is not downloaded; nothing to remove (dg-chat models rm tiny deletes the "
                             "partial files of its stopped pulls)")
    removal = hub.plan_removal("tiny", Settings())
    assert removal.specs == ["tiny:Q4_K_M"] and stopped.file_path in removal.paths
    assert removal.freed == len(gguf_files[Q4]) + stopped.size_on_disk
    removal.execute()
    assert leftovers(cache) == [] and hub.unfinished_downloads(Settings()) == {}


def test_nothing_is_removed_while_a_pull_of_the_model_runs(fake_hub, tmp_path, cache, gguf_files):
    split_q8(fake_hub, tmp_path, gguf_files)
    hub.pull("tiny:Q4_K_M", Settings())
    second = "Q8/tiny-Q8_0-00002-of-00002.gguf"
    with pytest.raises(hub.DownloadCancelled):
        hub.pull("tiny:Q8_0", Settings(), stop_in(second))
    (part,) = repo_dir(cache).rglob("*.incomplete")
    before = leftovers(cache)
    with hub.WeakFileLock(hub._lock_file(part.with_suffix("")), timeout=1):  # as a pull in another process holds it
        for spec in ("tiny", "tiny:Q8_0", "tiny:Q4_K_M"):  # not even the quant the pull has half done
            with pytest.raises(DgChatError) as exc:
                hub.plan_removal(spec, Settings()).execute()
            assert one_line(exc) == f"a pull is downloading into {part}; stop it first"
    assert leftovers(cache) == before


def test_the_free_disk_is_checked_for_every_part_of_a_split_quant_first(fake_hub, monkeypatch, tmp_path, cache,
                                                                         gguf_files):
    parts = split_q8(fake_hub, tmp_path, gguf_files)
    real = hub.shutil.disk_usage
    monkeypatch.setattr(hub.shutil, "disk_usage", lambda p: real(p)._replace(free=len(parts[0]) + 100))
    with pytest.raises(DgChatError) as exc:
        hub.pull("tiny:Q8_0", Settings())
    assert f"the download needs {hub.gb(sum(map(len, parts)))} more" in one_line(exc)
    assert fake_hub.file_requests() == [] and leftovers(cache) == []


def test_no_network_is_one_clear_line(fake_hub, monkeypatch, cache):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    point_hub_at(monkeypatch, closed, cache)
    with pytest.raises(DgChatError) as exc:
        hub.pull("tiny:Q4_K_M", Settings())
    assert f"cannot reach {closed}" in one_line(exc)


def test_offline_mode_refuses_to_download(fake_hub, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(DgChatError) as exc:
        hub.pull("tiny:Q4_K_M", Settings())
    assert "offline mode is on" in one_line(exc)
    assert fake_hub.requests == []


def test_not_enough_free_disk_is_checked_before_downloading(fake_hub, monkeypatch, cache):
    real = hub.shutil.disk_usage
    monkeypatch.setattr(hub.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(DgChatError) as exc:
        hub.pull("tiny:Q4_K_M", Settings())
    assert "not enough disk space" in one_line(exc)
    assert fake_hub.file_requests() == [] and leftovers(cache) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux /dev/full")
def test_disk_full_while_writing_is_one_clear_line(fake_hub, cache, gguf_files):
    sha = fake_hub.repos[REPO].sha256(Q4)
    part = repo_dir(cache) / "blobs" / f"{sha}.incomplete"
    part.parent.mkdir(parents=True)
    part.symlink_to("/dev/full")  # every write fails with ENOSPC
    with pytest.raises(DgChatError) as exc:
        hub.pull("tiny:Q4_K_M", Settings())
    assert "disk full" in one_line(exc) and "resumes" in one_line(exc)
    assert not (repo_dir(cache) / "blobs" / sha).exists() and not (repo_dir(cache) / "snapshots").exists()


def test_quant_is_chosen_by_free_memory(fake_hub, monkeypatch, gguf_files):
    monkeypatch.setattr(hub, "free_memory", lambda device: hub.Memory(int(1.5e6), "VRAM"))
    plan = hub.plan_pull("tiny", Settings())
    assert plan.quant == "Q4_K_M" and plan.size == len(gguf_files[Q4])
    assert plan.reason == "Q4_K_M: 1.0 MB fits 1.5 MB free VRAM with 100.0 kB headroom"

    monkeypatch.setattr(hub, "free_memory", lambda device: hub.Memory(int(5e6), "RAM"))
    assert hub.plan_pull("tiny", Settings()).quant == "Q8_0"
    assert hub.plan_pull("tiny:q4_k_m", Settings()).reason is None  # explicit quant: no choice to explain


def test_models_dir_setting_overrides_the_shared_cache(fake_hub, tmp_path, cache):
    settings = Settings(models_dir=str(tmp_path / "my-models"))
    path = hub.pull("tiny:Q4_K_M", settings)
    assert path.is_relative_to(tmp_path / "my-models") and not cache.exists()
    assert hub.resolve_model("tiny:Q4_K_M", settings) == path
    with pytest.raises(DgChatError, match="not downloaded"):
        hub.resolve_model("tiny:Q4_K_M", Settings())


def test_remove_one_quant_then_the_rest(fake_hub, cache, gguf_files):
    q4 = hub.pull("tiny:Q4_K_M", Settings())
    hub.pull("tiny:Q8_0", Settings())

    removal = hub.plan_removal("tiny:Q4_K_M", Settings())
    assert removal.specs == ["tiny:Q4_K_M"] and removal.paths == [q4] and removal.freed == len(gguf_files[Q4])
    removal.strategy.execute()
    assert [m.spec for m in hub.local_models(Settings())] == ["tiny:Q8_0"]
    assert len(list((repo_dir(cache) / "blobs").iterdir())) == 1

    hub.plan_removal("tiny", Settings()).strategy.execute()
    assert hub.local_models(Settings()) == []
    assert list((repo_dir(cache) / "blobs").iterdir()) == []
    with pytest.raises(DgChatError, match="not downloaded; nothing to remove"):
        hub.plan_removal("tiny", Settings())


def test_no_socket_is_opened_to_resolve_and_load_a_local_model(fake_hub, monkeypatch):
    path = hub.pull("tiny:Q8_0", Settings())
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # even when online mode is on

    def no_network(*args, **kwargs):
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(hub, "free_memory", lambda device: hub.Memory(10**9, "RAM"))
    for spec in ("tiny:Q8_0", "tiny", str(path)):
        resolved = hub.resolve_model(spec, Settings())
        with open_gguf(resolved) as gguf:
            assert gguf.architecture == "dream"
            assert gguf.array("token_embd.weight").shape == (2048, 256)
    assert [m.spec for m in hub.local_models(Settings())] == ["tiny:Q8_0"]
