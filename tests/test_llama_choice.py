"""Backend choice by architecture, and what `dg-chat doctor` reports about llama.cpp."""

from __future__ import annotations

import pytest

from dg_chat.engine.backends.choice import choose_backend, choose_backend_for_gguf, llama_status
from dg_chat.engine.backends.llama_lib import libllama_architectures
from dg_chat.errors import DgChatError
from scripts import make_tiny_llama_models as tiny


def test_libllama_arch_table_is_read_from_the_library():
    known = libllama_architectures()
    assert {"dream", "llada", "llada-moe", "rnd1", "llama", "qwen2", "bert", "gemma4"} <= known
    assert "diffusion-gemma" not in known and "unknown" not in known and len(known) > 100


@pytest.mark.parametrize(("arch", "backend"), [("dream", "llama"), ("llada", "llama"), ("llada-moe", "llama"),
                                                ("rnd1", "llama"), ("diffusion-gemma", "torch")])
def test_auto_picks_the_backend_that_runs_the_architecture(arch, backend):
    assert choose_backend(arch, "auto") == backend
    assert choose_backend(arch, backend) == backend


@pytest.mark.parametrize(("arch", "requested", "message"), [
    ("diffusion-gemma", "llama", "the installed llama.cpp (llama-cpp-python 0.3.36) cannot load 'diffusion-gemma' "
                                 "models; use --backend torch (or auto)"),
    ("dream", "torch", "the torch backend runs only diffusion-gemma models, not 'dream'; "
                       "use --backend llama (or auto)"),
    ("llama", "llama", "dg-chat's llama.cpp backend does not run 'llama' models; dg-chat runs"),
    ("mamba-9", "auto", "no backend runs the 'mamba-9' architecture"),
    ("dream", "cuda", "unknown backend 'cuda'"),
])
def test_impossible_choices_say_why_and_what_to_do(arch, requested, message):
    with pytest.raises(DgChatError) as error:
        choose_backend(arch, requested)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_choice_reads_the_architecture_of_a_gguf(tmp_path):
    path = tiny.write_model(tmp_path / "m.gguf", "llada-moe")
    assert choose_backend_for_gguf(path) == ("llada-moe", "llama")
    gemma = tiny.write_model(tmp_path / "g.gguf", "dream", metadata={"general.architecture": "diffusion-gemma"})
    assert choose_backend_for_gguf(gemma, "auto") == ("diffusion-gemma", "torch")
    with pytest.raises(DgChatError, match="cannot load 'diffusion-gemma'"):
        choose_backend_for_gguf(gemma, "llama")


def test_llama_status_for_doctor():
    status = llama_status()
    assert status["llama_cpp_python"] == "0.3.36" and status["usable"] and status["error"] is None
    assert isinstance(status["gpu_offload"], bool) and status["libllama_architectures_readable"]
    assert status["library"].endswith(("libllama.so", "libllama.dylib", "llama.dll"))
    assert status["architectures"] == {"llama": ["dream", "llada", "llada-moe", "rnd1"], "torch": ["diffusion-gemma"]}
