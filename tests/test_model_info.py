"""dg_chat.gguf.summary and `dg-chat models info`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gguf import GGUFWriter
from gguf.constants import GGMLQuantizationType as Q

from dg_chat.cli import main
from dg_chat.commands.model_info import backend_verdict
from dg_chat.gguf.reader import open_gguf
from dg_chat.gguf.summary import QuantGroup, human_bytes, human_count, summarize
from tests.support.gguf_samples import SAMPLE_TENSORS, write_sample
from tests.support.published_layout import Dims, model_metadata
from tests.support.scripts import load_script


def _summary(path: Path):
    with open_gguf(path) as gguf:
        return summarize(gguf)


def _backend(path: Path, requested: str = "auto") -> str:
    return backend_verdict(_summary(path).architecture, requested)


def test_summary_of_a_diffusion_gemma_file(tmp_path):
    path = write_sample(tmp_path / "dg.gguf")
    s = _summary(path)
    assert (s.architecture, s.name, s.file_type) == ("diffusion-gemma", "Tiny DiffusionGemma", "Q4_K_M")
    assert s.parameters == 16 * 64 + 64 + 32 * 64 + 16 * 64 + 16 * 64 + 4 * 8 * 256 + 4 * 4 * 256
    assert s.file_size == path.stat().st_size
    assert len(s.quant_mix) == len(SAMPLE_TENSORS)
    assert s.quant_mix[0] == QuantGroup("Q4_K", 1, 4 * 8 * 144)  # most bytes first
    assert QuantGroup("Q8_0", 1, 16 * 2 * 34) in s.quant_mix
    assert (s.context_length, s.canvas_length, s.vocab_size) == (4096, 8, 8)
    assert (s.experts, s.experts_used, s.has_chat_template) == (4, 2, True)
    assert (_backend(path), s.mask_diffusion) == ("torch", False)


def test_summary_counts_tensors_per_type(tmp_path):
    tensors = {"a.weight": (Q.Q8_0, (4, 32)), "b.weight": (Q.Q8_0, (2, 64)), "c.weight": (Q.F32, (3,))}
    s = _summary(write_sample(tmp_path / "m.gguf", tensors=tensors))
    assert s.quant_mix == (QuantGroup("Q8_0", 2, 8 * 34), QuantGroup("F32", 1, 12))
    assert s.parameters == 4 * 32 + 2 * 64 + 3


def test_backend_choice_and_its_refusals(tmp_path):
    assert _backend(write_sample(tmp_path / "l.gguf", arch="llada", canvas_length=None)) == "llama"
    refused = _backend(write_sample(tmp_path / "d.gguf"), "llama")
    assert refused.startswith("none: ") and "cannot load 'diffusion-gemma' models" in refused
    unknown = _backend(write_sample(tmp_path / "g.gguf", arch="gemma4"))
    assert unknown.startswith("none: ") and "no backend runs the 'gemma4' architecture" in unknown


def test_minimal_file_has_unset_fields(tmp_path):
    w = GGUFWriter(tmp_path / "min.gguf", "dream")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    s = _summary(tmp_path / "min.gguf")
    assert s.mask_diffusion and s.quant_mix == () and s.parameters == 0
    assert (s.name, s.file_type, s.context_length, s.canvas_length, s.vocab_size, s.experts) == (None,) * 6
    assert not s.has_chat_template
    assert main(["models", "info", str(tmp_path / "min.gguf")]) == 0


def test_human_units():
    assert human_count(25_200_000_000) == "25.2B"
    assert human_count(3_900_000) == "3.9M" and human_count(999) == "999"
    assert human_bytes(16_000_000_000) == "16.0 GB" and human_bytes(512) == "512 B"


def test_models_info_prints_everything(tmp_path, capsys):
    path = write_sample(tmp_path / "dg.gguf")
    assert main(["models", "info", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for expected in ("architecture diffusion-gemma", "name Tiny DiffusionGemma", "parameters 17.5K (17,472)",
                     "file type Q4_K_M", "tensor types Q4_K: 1 tensor, 4.6 kB", "Q8_0: 1 tensor, 1.1 kB",
                     "context length 4,096", "canvas length 8", "vocabulary 8", "experts 4 (2 used per token)",
                     "chat template present", "backend torch", f"{path} (18.1 kB)"):
        assert expected in out, expected


def test_models_info_of_a_mask_model_and_an_unrunnable_one(tmp_path, capsys):
    assert main(["models", "info", str(write_sample(tmp_path / "l.gguf", arch="llada", canvas_length=None))]) == 0
    out = capsys.readouterr().out
    assert "n/a (mask diffusion)" in out and "llama" in out
    assert main(["models", "info", str(write_sample(tmp_path / "g.gguf", arch="gemma4"))]) == 0
    assert "none: no backend runs the 'gemma4' architecture" in " ".join(capsys.readouterr().out.split())


def test_models_info_neutralises_escapes_and_markup_from_the_file(tmp_path, capsys):
    path = write_sample(tmp_path / "evil.gguf", name="\x1b[2J[bold red]pwned[/] \x07")
    assert main(["models", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "␛[2J[bold red]pwned[/] ␇" in out  # shown, not obeyed


def test_models_info_of_the_real_gemma4_vocab(gemma4_vocab, capsys):
    assert main(["models", "info", str(gemma4_vocab)]) == 0
    out = capsys.readouterr().out
    assert "gemma4" in out and "262,144" in out and "no tensors" in out and "128 (8 used per token)" in out


@pytest.mark.parametrize("name, expected", [
    ("no-such-model.gguf", "no such model file: no-such-model.gguf"),
    ("diffusiongemma:Q4_K_M",
     "diffusiongemma:Q4_K_M is not downloaded; run: dg-chat models pull diffusiongemma:Q4_K_M"),
    ("openai:http://127.0.0.1:8000/v1#m", "`dg-chat doctor -m openai:http://127.0.0.1:8000/v1#m` checks a server"),
    (".", "is a folder: a model is a .gguf file"),
])
def test_models_info_of_something_that_is_not_a_local_model(name, expected, capsys):
    assert main(["models", "info", name]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err


def test_a_pipe_is_not_a_model_file(tmp_path, capsys):
    pipe = tmp_path / "model.gguf"
    os.mkfifo(pipe)
    assert main(["models", "info", str(pipe)]) == 1
    assert capsys.readouterr().err == (f"dg-chat: error: {pipe} is not a regular file (a pipe or a device): "
                                       "a model is a .gguf file\n")


def test_models_info_shows_the_cuda_memory_of_both_kernel_choices(tmp_path, capsys):
    # the published metadata with one small tensor: the estimate reads shapes from the metadata
    path = load_script("q4_k_m_layout").write_random_gguf(
        tmp_path / "dg.gguf", {"token_embd.weight": (Q.Q8_0, (64, Dims().hidden))}, model_metadata())
    assert main(["models", "info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.startswith("VRAM on CUDA")]
    triton, reference = " ".join(lines[at].split()), " ".join(lines[at + 1].split())
    # the published shapes at a 32k context: 0.99 GB (static) / 1.30 GB (growing) of KV cache, 0.8 GB of CUDA runtime
    assert triton.startswith("VRAM on CUDA 32k context: 1.8 GB with triton kernels (weights 0.0, KV cache 1.0, "
                             "activations 0.0, CUDA runtime 0.8)")
    assert reference.endswith("GB with reference kernels (weights 0.0, KV cache 1.3, activations 0.0, "
                              "CUDA runtime 0.8)")


def test_models_info_says_why_it_cannot_estimate_the_memory(tmp_path, capsys):
    assert main(["models", "info", str(write_sample(tmp_path / "dg.gguf"))]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert ("VRAM on CUDA unknown: metadata 'diffusion-gemma.attention.sliding_window_pattern' is an array of 3, "
            "expected 1 booleans (one per layer)") in out
    assert main(["models", "info", str(write_sample(tmp_path / "l.gguf", arch="llada", canvas_length=None))]) == 0
    assert "VRAM" not in capsys.readouterr().out
