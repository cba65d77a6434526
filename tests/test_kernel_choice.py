"""The `kernels` setting resolved for a device (torch_dg/kernel_choice.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from dg_chat.engine.backends.base import BackendError
from dg_chat.engine.backends.torch_dg.kernel_choice import choose_kernels
from dg_chat.engine.backends.torch_dg.kernels import runtime

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def triton_installed(monkeypatch):
    monkeypatch.setattr(runtime, "triton", object())


@pytest.fixture
def no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def test_auto_is_triton_on_cuda(triton_installed):
    assert choose_kernels("auto", CUDA) == "triton"
    assert choose_kernels("triton", CUDA) == "triton"


def test_auto_is_reference_on_the_cpu_even_under_the_interpreter(triton_installed, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert choose_kernels("auto", CPU) == "reference"


def test_auto_falls_back_to_reference_without_triton(monkeypatch):
    monkeypatch.setattr(runtime, "triton", None)
    assert choose_kernels("auto", CUDA) == "reference"


def test_reference_is_always_reference(monkeypatch, no_interpreter):
    monkeypatch.setattr(runtime, "triton", None)
    assert choose_kernels("reference", CUDA) == "reference"
    assert choose_kernels("reference", CPU) == "reference"


def test_triton_on_the_cpu_runs_under_the_interpreter(triton_installed, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert choose_kernels("triton", CPU) == "triton"


def test_triton_on_the_cpu_without_the_interpreter_is_one_line_with_the_way_out(triton_installed, no_interpreter):
    with pytest.raises(BackendError) as info:
        choose_kernels("triton", CPU)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("--kernels triton on the CPU: ")
    assert "TRITON_INTERPRET=1" in message and message.endswith("use --kernels reference")


def test_triton_without_the_package_names_it(monkeypatch):
    monkeypatch.setattr(runtime, "triton", None)
    with pytest.raises(BackendError, match=r"^--kernels triton on cuda: the triton package is not installed .*"
                                           r"use --kernels reference$"):
        choose_kernels("triton", CUDA)


def ask(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dg_chat.cli", "ask", *argv], capture_output=True, text=True,
                          timeout=600, env=env)


def test_ask_with_triton_kernels_on_the_cpu():
    """Without the interpreter: one line and exit 1; under it: the answer, from the Triton path."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    argv = ("Hi", "--demo", "--device", "cpu", "--kernels", "triton", "--seed", "1", "--steps", "1",
            "--max-canvases", "1", "--json")
    refused = ask(env, *argv)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip().count("\n") == 0 and "TRITON_INTERPRET=1" in refused.stderr
    answered = ask({**env, "TRITON_INTERPRET": "1"}, *argv)
    assert answered.returncode == 0, answered.stderr
    assert len(json.loads(answered.stdout)["token_ids"]) > 0
