"""`dg-chat models pull|list|rm` against the fake Hub."""

from __future__ import annotations

import io

import pytest

from dg_chat import hub, paths
from dg_chat.cli import main
from tests.support.fake_hub import COMMIT, FakeHub, FakeRepo, point_hub_at, tiny_gguf, write_catalog

REPO = "test-org/tiny-GGUF"


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    write_catalog(tmp_path / "models", REPO)
    monkeypatch.setattr(paths, "repo_models_dir", lambda: tmp_path / "models")
    monkeypatch.setattr(hub, "free_memory", lambda device: hub.Memory(int(1.5e6), "VRAM"))
    files = {name: tiny_gguf(tmp_path / name, n_floats=n) for name, n in
             (("tiny-Q4_K_M.gguf", 256 * 1024), ("tiny-Q8_0.gguf", 512 * 1024))}
    with FakeHub() as server:
        server.repos[REPO] = FakeRepo(files)
        point_hub_at(monkeypatch, server.url, tmp_path / "hf-cache")
        yield server


def test_pull_list_rm(fake_hub, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # long cache paths on one line
    assert main(["models", "pull", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "tiny:Q4_K_M: test-org/tiny-GGUF/tiny-Q4_K_M.gguf (1.0 MB)" in out
    assert "chosen Q4_K_M: 1.0 MB fits 1.5 MB free VRAM" in out
    assert "download" in out and "verify" in out and "MB/s" in out
    assert "ready: " in out and "dg-chat -m tiny:Q4_K_M" in out

    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "Q4_K_M" in out and "tiny-Q4_K_M.gguf" in out and " MB" in out  # Q8_0 listed, not local
    assert "missing:" in out  # no demo model in this test's models dir

    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert main(["models", "rm", "tiny:Q4_K_M"]) == 0
    assert "kept" in capsys.readouterr().out
    assert [m.spec for m in hub.local_models(hub.Settings())] == ["tiny:Q4_K_M"]

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["models", "rm", "tiny:Q4_K_M"]) == 1
    assert capsys.readouterr().err.startswith("\ndg-chat: error: no answer to the confirmation; pass --yes")

    def read_only(path, *args, **kwargs):  # a shared cache this user may not write
        raise PermissionError(13, "Permission denied", str(path))

    with monkeypatch.context() as patch:
        patch.setattr("os.unlink", read_only)
        patch.setattr("os.remove", read_only)
        patch.setattr("shutil.rmtree", read_only)
        assert main(["models", "rm", "tiny", "--yes"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dg-chat: error: cannot delete ") and err.endswith(": Permission denied\n")
    assert "internal error" not in err and not (paths.cache_dir() / "crashes").exists()

    assert main(["models", "rm", "tiny", "--yes"]) == 0
    assert "deleted; freed 1.0 MB" in capsys.readouterr().out
    assert hub.local_models(hub.Settings()) == []


@pytest.mark.parametrize("columns", ["80", "40"])  # 80: what rich gives a pipe
def test_list_folds_a_long_path_in_a_pipe_never_cuts_it(monkeypatch, tmp_path, capsys, columns):
    """`dg-chat models list | cat`: the downloaded file's path is whole in its column, over several lines."""
    write_catalog(tmp_path / "models", REPO)
    monkeypatch.setattr(paths, "repo_models_dir", lambda: tmp_path / "models")
    path = tmp_path / "home/.cache/huggingface/hub/models--test-org--tiny-GGUF/snapshots" / COMMIT / "tiny-Q4_K_M.gguf"
    monkeypatch.setattr(hub, "local_models", lambda settings: [hub.LocalModel("tiny:Q4_K_M", path, 10**6)])
    monkeypatch.setenv("COLUMNS", columns)
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= int(columns)
    rows = [line.split("│") for line in out.splitlines() if line.startswith("│")]
    assert str(path) in "".join(cells[-2].strip() for cells in rows)  # the "downloaded" column, unfolded


def test_a_models_folder_that_is_a_file_is_one_line(monkeypatch, tmp_path, capsys):
    (tmp_path / "models").write_text("not a folder")
    monkeypatch.setenv("DG_CHAT_MODELS_DIR", str(tmp_path / "models"))
    assert main(["models", "list"]) == 1
    assert capsys.readouterr().err == (f"dg-chat: error: the models folder {tmp_path / 'models'} is not a folder: "
                                       "set models_dir (DG_CHAT_MODELS_DIR) to a folder\n")


def test_pull_errors_are_one_line(fake_hub, capsys):
    fake_hub.repos.clear()
    assert main(["models", "pull", "tiny:Q8_0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dg-chat: error: test-org/tiny-GGUF: repository not found")


@pytest.mark.parametrize("command, spec, expected", [
    ("pull", "openai:http://gpu-box:8000/v1#org/model", "is a model on a server: models pull takes a catalog name"),
    ("rm", "openai:http://gpu-box:8000/v1#org/model", "is a model on a server: models rm takes a catalog name"),
    ("rm", "/tmp/my-copy.gguf", "is a file path; models rm deletes downloaded catalog models (tiny)"),
])
def test_pull_and_rm_say_what_a_server_spec_or_a_path_is(fake_hub, capsys, command, spec, expected):
    assert main(["models", command, spec, *(["--yes"] if command == "rm" else [])]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dg-chat: error: '{spec}' {expected}") and err.count("\n") == 1


def test_interrupted_pull_says_how_to_resume(fake_hub, capsys, monkeypatch):
    real = hub.http_get

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hub, "http_get", interrupted)
    assert main(["models", "pull", "tiny:Q8_0"]) == 130
    assert "run `dg-chat models pull tiny:Q8_0` again to resume" in capsys.readouterr().out
    monkeypatch.setattr(hub, "http_get", real)
    assert main(["models", "pull", "tiny:Q8_0"]) == 0


def test_list_shows_a_stopped_pull_and_rm_deletes_it(fake_hub, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "250")
    real = hub.http_get

    def cut(url, temp_file, **kwargs):  # a pull stopped after 1000 bytes
        temp_file.write(b"x" * 1000)
        raise KeyboardInterrupt

    monkeypatch.setattr(hub, "http_get", cut)
    assert main(["models", "pull", "tiny:Q8_0"]) == 130
    monkeypatch.setattr(hub, "http_get", real)
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "partial" in line)
    assert "1.0 kB" in row and "stopped pulls: a pull resumes them, dg-chat models rm tiny deletes them" in row
    assert main(["models", "rm", "tiny:Q8_0", "--yes"]) == 1
    assert "dg-chat models rm tiny deletes the partial files of its stopped pulls" in capsys.readouterr().err
    assert main(["models", "rm", "tiny", "--yes"]) == 0
    assert "deleted; freed 1.0 kB" in capsys.readouterr().out
    assert list((tmp_path / "hf-cache").rglob("*.incomplete")) == []
