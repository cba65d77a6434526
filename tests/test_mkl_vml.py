"""The guard against oneMKL's VML first-call race (mkl_vml.py): it covers every function torch
computes with MKL, and the CPU engine resolves them before its first forward pass."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from dg_chat.engine.backends.torch_dg import backend, mkl_vml
from dg_chat.gguf.reader import open_gguf
from tests.support.tiny_dg import convert, hf_model


def test_every_function_torch_sends_to_mkl_is_resolved():
    header = Path(torch.__file__).parent / "include/ATen/cpu/vml.h"
    if not header.exists():
        pytest.skip("this torch wheel ships no ATen headers")
    # the live (not commented-out) IMPLEMENT_VML_MKL(op, MklOp) lines
    routed = set(re.findall(r"^IMPLEMENT_VML_MKL\((\w+),", header.read_text(), flags=re.MULTILINE))
    assert routed == set(mkl_vml.VML_FUNCTIONS)


def test_the_cpu_engine_resolves_vml_before_loading(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    path = convert(hf_model(), tmp_path)
    events: list[str] = []
    monkeypatch.setattr(backend, "resolve_vml_dispatch", lambda: events.append("resolve"))
    real_weights = backend.Weights
    monkeypatch.setattr(backend, "Weights", lambda *a, **k: events.append("load") or real_weights(*a, **k))
    backend.TorchBackend(open_gguf(path), "cpu", "reference")
    assert events == ["resolve", "load"]
