"""`dg-chat doctor`: one line per check, a hint on problems, exit 1 only when a check failed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dg_chat import paths
from dg_chat.cli import build_parser, main, settings_overrides
from dg_chat.commands import doctor
from dg_chat.config import Settings
from dg_chat.store import Store
from tests.support.fake_hub import tiny_gguf, write_catalog

LINE = re.compile(r"^(ok|warn|fail) +\S")


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    write_catalog(tmp_path / "models", "test-org/tiny-GGUF")
    monkeypatch.setattr(paths, "repo_models_dir", lambda: tmp_path / "models")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "models"


def fake_llama_status(monkeypatch, **changes):
    status = {"llama_cpp_python": doctor.LLAMA_CPP_VERSION, "usable": True, "error": None, "gpu_offload": False,
              "architectures": {"llama": ["dream", "llada", "llada-moe", "rnd1"], "torch": ["diffusion-gemma"]}}
    monkeypatch.setattr(doctor, "llama_status", lambda: status | changes)


@pytest.fixture
def llama_ok(monkeypatch):
    fake_llama_status(monkeypatch)


def checks_by_name(settings: Settings) -> dict[str, doctor.Check]:
    return {check.name: check for check in doctor.run_checks(settings)}


def test_healthy_cpu_machine_passes(models_dir, llama_ok, capsys):
    tiny_gguf(models_dir / "demo.gguf", n_floats=256)
    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(LINE.match(line) for line in lines)
    checks = checks_by_name(Settings())
    assert checks["demo"].status == "ok" and "dream on the llama backend" in checks["demo"].detail
    assert checks["model"].status == "ok" and checks["model"].detail.startswith("demo: ")
    assert checks["llama.cpp"].status == "ok" and "CPU only" in checks["llama.cpp"].detail
    assert checks["downloads"].status == "warn" and checks["downloads"].hint == "dg-chat models pull diffusiongemma"
    assert checks["models dir"].detail.endswith("hf-cache (not created yet)")
    assert {"python", "torch", "config", "data", "cache", "hub", "disk"} <= checks.keys()


def test_missing_llama_cpp_is_a_failed_check_not_a_traceback(models_dir, monkeypatch, capsys):
    tiny_gguf(models_dir / "demo.gguf", n_floats=256)
    fake_llama_status(monkeypatch, usable=False, error="llama-cpp-python is not installed")
    assert main(["doctor"]) == 1
    out, err = capsys.readouterr()
    (line,) = [line for line in out.splitlines() if "llama.cpp" in line]
    assert line.startswith("fail") and "not usable" in line and "hint: run scripts/setup.sh" in line
    assert "Traceback" not in out + err


def test_a_broken_model_fails_with_its_reason(models_dir, llama_ok, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf at all")
    check = checks_by_name(Settings(model=str(broken)))["model"]
    assert check.status == "fail" and "not a GGUF file" in check.detail and check.hint
    checks = checks_by_name(Settings(model="tiny:Q8_0"))
    assert checks["model"].status == "fail"
    assert "not downloaded; run: dg-chat models pull tiny:Q8_0" in checks["model"].detail


def test_a_model_the_chosen_backend_cannot_run_fails_without_the_redownload_hint(models_dir, llama_ok, tmp_path):
    tiny_gguf(models_dir / "demo.gguf", n_floats=256)  # a dream model: llama.cpp runs it, not the torch engine
    check = checks_by_name(Settings(backend="torch"))["demo"]
    assert check.status == "fail" and "--backend" in check.detail and check.hint == ""


def test_a_device_that_is_not_there_fails(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    check = doctor.check_kernels(Settings(device="cuda"))
    assert (check.status, check.name) == ("fail", "device") and "no CUDA GPU is available" in check.detail


def test_a_long_check_name_keeps_a_space_before_its_detail(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "run_checks", lambda *a: [doctor.Check("ok", "diffusiongemma:Q8_0", "16.8 MB")])
    assert main(["doctor"]) == 0
    assert capsys.readouterr().out == "ok   diffusiongemma:Q8_0 16.8 MB\n"


def test_version_mismatch_and_missing_offload_warn(monkeypatch):
    fake_llama_status(monkeypatch, llama_cpp_python="0.3.1")
    assert doctor.check_llama(cuda=False).status == "warn"
    fake_llama_status(monkeypatch)
    check = doctor.check_llama(cuda=True)
    assert check.status == "warn" and "DG_CHAT_CUDA=1" in check.hint


def test_doctor_runs_on_this_machine():
    result = subprocess.run([sys.executable, "-m", "dg_chat.cli", "doctor"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr + result.stdout
    lines = result.stdout.splitlines()
    assert len(lines) >= 10 and all(LINE.match(line) for line in lines)
    assert (result.returncode == 1) == any(line.startswith("fail") for line in lines)


def test_kernels_on_the_cpu_resolve_to_reference_and_say_why_triton_is_not_usable(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    check = doctor.check_kernels(Settings(device="cpu"))
    assert check.status == "ok" and check.detail.startswith("auto → reference on cpu; Triton not usable: ")
    assert "TRITON_INTERPRET=1" in check.detail


def test_kernels_triton_where_it_cannot_run_fails_with_a_hint(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    check = doctor.check_kernels(Settings(device="cpu", kernels="triton"))
    assert check.status == "fail" and check.detail.startswith("triton on cpu; Triton not usable: ")
    assert "--kernels reference" in check.hint
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # Triton's interpreter runs the kernels on the CPU
    assert doctor.check_kernels(Settings(device="cpu", kernels="triton")) == doctor.Check(
        "ok", "kernels", "triton on cpu; Triton usable")


def test_kernels_auto_on_cuda_without_triton_warns(monkeypatch):
    from dg_chat.engine.backends.torch_dg.kernels import runtime

    monkeypatch.setattr("dg_chat.engine.backends.torch_dg.backend.resolve_device",
                        lambda requested: torch.device("cuda"))
    monkeypatch.setattr(runtime, "triton", None)
    check = doctor.check_kernels(Settings())
    assert check.status == "warn" and check.detail.startswith("auto → reference on cuda; Triton not usable: the triton")
    monkeypatch.setattr(runtime, "triton", object())
    assert doctor.check_kernels(Settings()).detail == "auto → triton on cuda; Triton usable"


def test_doctor_lists_the_kernels_check(models_dir, llama_ok):
    assert "kernels" in checks_by_name(Settings())


@pytest.mark.parametrize("argv", [["doctor", "-m", "demo", "--kernels", "reference"],
                                  ["-m", "demo", "--kernels", "reference", "doctor"]])
def test_the_model_flags_go_before_or_after_doctor(argv):
    overrides = settings_overrides(build_parser().parse_args(argv))
    assert {name: value for name, value in overrides.items() if value is not None} == {
        "model": "demo", "kernels": "reference"}


def test_doctor_takes_no_sampling_flags(capsys):
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(["doctor", "--seed", "1"])
    assert exit.value.code == 2 and "unrecognized arguments: --seed 1" in capsys.readouterr().err


def lines_by_name(out: str) -> dict[str, str]:
    """doctor's output lines by check name (status in columns 0-4, name in 5-20)."""
    return {line[5:21].strip(): line for line in out.splitlines()}


@pytest.mark.parametrize("make", ["file", "under a file"])
def test_a_data_dir_that_cannot_be_a_folder_fails_with_a_hint(make, models_dir, llama_ok, tmp_path, monkeypatch,
                                                               capsys):
    tiny_gguf(models_dir / "demo.gguf", n_floats=256)
    afile = tmp_path / "afile"
    afile.write_text("")
    data = afile if make == "file" else afile / "data"
    monkeypatch.setenv("DG_CHAT_DATA_DIR", str(data))
    assert main(["doctor"]) == 1
    lines = lines_by_name(capsys.readouterr().out)
    assert [name for name, line in lines.items() if line.startswith("fail")] == ["data", "history"]
    assert f"{data} " in lines["data"] and "not a folder" in lines["data"]
    assert f"{data / 'history.sqlite3'} cannot be created" in lines["history"]  # not "ok (not created yet)"
    assert "hint: set DG_CHAT_DATA_DIR to a writable folder" in lines["data"]


def test_folders_not_created_yet_are_ok_and_doctor_creates_none(models_dir, llama_ok, isolated_dirs):
    checks = checks_by_name(Settings())
    for name, path in (("data", paths.data_dir()), ("cache", paths.cache_dir())):
        assert checks[name] == doctor.Check("ok", name, f"{path} (not created yet)")
    assert checks["models dir"].status == "ok"
    assert not isolated_dirs.exists()


def test_an_existing_writable_folder_is_ok(tmp_path):
    assert doctor.check_dir("cache", tmp_path, "hint") == doctor.Check("ok", "cache", str(tmp_path))


def test_a_models_dir_that_is_a_file_warns_as_only_downloads_need_it(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    (check,) = [c for c in doctor.check_paths(Settings(models_dir=str(afile))) if c.name == "models dir"]
    assert check.status == "warn" and "not a folder" in check.detail and "DG_CHAT_MODELS_DIR" in check.hint


def test_a_models_folder_that_is_a_file_is_a_failed_check_and_the_others_still_run(tmp_path, monkeypatch, llama_ok,
                                                                                    capsys):
    (tmp_path / "models").write_text("not a folder")
    monkeypatch.setenv("DG_CHAT_MODELS_DIR", str(tmp_path / "models"))
    assert main(["doctor"]) == 1
    lines = lines_by_name(capsys.readouterr().out)
    assert lines["downloads"].startswith("fail") and "is not a folder" in lines["downloads"]
    assert {"python", "torch", "model", "config", "data", "history"} <= lines.keys()


def test_a_history_that_cannot_be_created_or_written_is_a_failed_check(tmp_path, monkeypatch):
    (tmp_path / "data").write_text("a file, not a folder")
    monkeypatch.setenv("DG_CHAT_DATA_DIR", str(tmp_path / "data"))
    check = doctor.check_history()
    assert check.status == "fail" and check.detail.startswith(f"{tmp_path / 'data' / 'history.sqlite3'} cannot be "
                                                              f"created: {tmp_path / 'data'} is not a folder")
    monkeypatch.setenv("DG_CHAT_DATA_DIR", str(tmp_path / "writable"))
    Store().close()
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as for a user who does not own the file
    check = doctor.check_history()
    assert check.status == "fail" and check.detail.endswith("history.sqlite3 is read-only: no chat could be saved")


def test_folders_this_user_may_not_enter_are_failed_checks_not_a_crash(tmp_path, monkeypatch, llama_ok, capsys):
    locked = tmp_path / "locked"  # mode 000 is no bar to root, who runs the tests: Python 3.11 raises there
    exists = Path.exists

    def not_entered(path: Path, *args, **kwargs) -> bool:
        if path.is_relative_to(locked) and path != locked:
            raise PermissionError(13, "Permission denied", str(path))
        return exists(path, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", not_entered)
    monkeypatch.setenv("DG_CHAT_DATA_DIR", str(locked / "data"))
    monkeypatch.setenv("DG_CHAT_MODELS_DIR", str(locked / "models"))
    assert main(["doctor"]) == 1
    lines = lines_by_name(capsys.readouterr().out)
    assert lines["history"].startswith("fail") and "history.sqlite3 cannot be read (Permission denied)" in \
        lines["history"]
    assert lines["downloads"].startswith("fail") and "cannot be read (Permission denied)" in lines["downloads"]
    assert main(["doctor", "--repair-history"]) == 1
    assert "cannot be read (Permission denied): make its folder readable" in capsys.readouterr().err


def test_a_config_file_named_by_dg_chat_config_that_does_not_exist_is_a_warning(tmp_path, monkeypatch):
    assert doctor.check_config(None).detail.endswith("(not created; defaults apply)")  # the default place
    monkeypatch.setenv("DG_CHAT_CONFIG", str(tmp_path / "typo.toml"))
    check = doctor.check_config(None)
    assert check.status == "warn" and str(tmp_path / "typo.toml") in check.detail and "DG_CHAT_CONFIG" in check.hint
    (tmp_path / "typo.toml").write_text("")
    assert doctor.check_config(None).status == "ok"


@pytest.mark.parametrize("source", ["config.toml", "environment"])
def test_broken_settings_are_a_failed_check_and_the_other_checks_still_run(source, llama_ok, monkeypatch, capsys):
    if source == "config.toml":
        paths.config_file().parent.mkdir(parents=True)
        paths.config_file().write_text("[sampler\nmax_steps = 3\n")
    else:
        monkeypatch.setenv("DG_CHAT_CANVAS_FPS", "-3")
    assert main(["doctor"]) == 1
    out, err = capsys.readouterr()
    assert err == "" and all(LINE.match(line) for line in out.splitlines())
    lines = lines_by_name(out)
    expected = str(paths.config_file()) if source == "config.toml" else "DG_CHAT_CANVAS_FPS"
    assert lines["config"].startswith("fail") and expected in lines["config"] and "hint: " in lines["config"]
    assert {"python", "torch", "llama.cpp", "hub", "data", "cache", "history"} <= lines.keys()
    assert not {"kernels", "model", "models dir", "disk"} & lines.keys()
