"""Bad files, bad numbers, bad devices: one line naming file, key, found and expected; exit 1;
no traceback, no crash log. Split GGUFs are recognised from their `split.*` metadata."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dg_chat import cli, hub, paths
from dg_chat.gguf.reader import open_gguf
from tests.support.gguf_edit import rewrite, split

DEMO = hub.demo_file()
ARCH = "diffusion-gemma"
ASK = ("ask", "Hello", "--seed", "4", "--steps", "2", "--max-canvases", "1", "--json")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status: int, err: str, expected: str) -> None:
    assert status == 1
    assert err.startswith("dg-chat: error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert "Traceback" not in err and "internal error" not in err
    assert not (paths.cache_dir() / "crashes").exists()


def answer_of(capsys, model: Path, *flags: str) -> dict:
    status, out, err = run(capsys, *ASK, "--model", str(model), *flags)
    assert status == 0, err
    return json.loads(out)


# -- 1. split GGUFs ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_tokens() -> list[int]:
    """The demo's answer to ASK, unsplit (computed once, in a fresh CLI call)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "dg_chat.cli", *ASK, "--demo"], capture_output=True, text=True,
                          timeout=300, check=True)
    return json.loads(done.stdout)["token_ids"]


def test_a_complete_model_named_like_a_split_part_loads(tmp_path, capsys, demo_tokens):
    with open_gguf(DEMO) as f:
        n_tensors = len(f.tensors)
    whole = rewrite(DEMO, tmp_path / "demo-00001-of-00001.gguf",
                    metadata={"split.no": 0, "split.count": 1, "split.tensors.count": n_tensors})
    assert answer_of(capsys, whole)["token_ids"] == demo_tokens
    plain_name = shutil.copy(DEMO, tmp_path / "demo-00001-of-00003.gguf")  # the name says split, the file does not
    assert answer_of(capsys, plain_name)["token_ids"] == demo_tokens


def test_a_split_model_loads_from_its_first_part(tmp_path, capsys, demo_tokens):
    first, _second = split(DEMO, tmp_path / "demo-00001-of-00002.gguf", 2)
    assert answer_of(capsys, first)["token_ids"] == demo_tokens
    info = {path: run(capsys, "models", "info", str(path)) for path in (first, DEMO)}
    assert info[first][0] == 0
    parameters = [[line for line in out.splitlines() if line.startswith("parameters")] for _, out, _ in info.values()]
    assert parameters[0] == parameters[1] and parameters[0]
    with open_gguf(DEMO) as whole, open_gguf(first) as parts:
        assert parts.file_size > whole.file_size and set(parts.tensors) == set(whole.tensors)
        assert all(np.array_equal(parts.raw(name), whole.raw(name)) for name in whole.tensors)


@pytest.mark.parametrize("command", [ASK, ("models", "info")])
def test_part_one_of_two_renamed_is_named_as_such(tmp_path, capsys, command):
    first, _second = split(DEMO, tmp_path / "demo-00001-of-00002.gguf", 2)
    renamed = first.rename(tmp_path / "demo.gguf")
    status, _, err = run(capsys, *command, *(["--model"] if command == ASK else []), str(renamed))
    assert_one_line_error(status, err, f"{renamed}: part 1 of 2 of a split GGUF: its name is not the split name")


@pytest.mark.parametrize("command", [ASK, ("models", "info")])
def test_a_later_part_or_a_missing_part_is_named(tmp_path, capsys, command):
    first, second = split(DEMO, tmp_path / "demo-00001-of-00002.gguf", 2)
    model_flag = ["--model"] if command == ASK else []
    status, _, err = run(capsys, *command, *model_flag, str(second))
    assert_one_line_error(status, err, f"{second}: part 2 of 2 of a split GGUF: load the model from its first part "
                                       "(demo-00001-of-00002.gguf)")
    second.unlink()
    status, _, err = run(capsys, *command, *model_flag, str(first))
    assert_one_line_error(status, err, f"{first}: part 1 of 2 of a split GGUF: part 2 is missing "
                                       "(looked for demo-00002-of-00002.gguf beside it)")


def test_a_split_llama_model_loads_from_its_first_part(tmp_path, capsys):
    from scripts import make_tiny_llama_models as tiny

    whole = tiny.write_model(tmp_path / "llada.gguf", "llada")
    first, _second = split(whole, tmp_path / "parts" / "llada-00001-of-00002.gguf", 2)
    expected = answer_of(capsys, whole, "--backend", "llama")["token_ids"]
    assert answer_of(capsys, first, "--backend", "llama")["token_ids"] == expected


# -- 2. impossible or wrongly typed metadata ------------------------------------------------------

def demo_with(tmp_path: Path, **changes) -> Path:
    return rewrite(DEMO, tmp_path / "bad.gguf", **changes)


N_VOCAB = 4096  # the demo's tokenizer
BAD_METADATA = [
    ({"diffusion.canvas_length": 0}, "metadata 'diffusion.canvas_length' is 0, expected an integer in 1..4096"),
    ({"tokenizer.ggml.eos_token_id": "1"},
     f"metadata 'tokenizer.ggml.eos_token_id' is a string ('1'), expected a token id in 0..{N_VOCAB - 1}"),
    ({"tokenizer.ggml.bos_token_id": 10**6}, "metadata 'tokenizer.ggml.bos_token_id' is 1000000, expected a token id"),
    ({f"{ARCH}.block_count": 0}, f"metadata '{ARCH}.block_count' is 0, expected an integer >= 1"),
    ({f"{ARCH}.embedding_length": None}, f"metadata '{ARCH}.embedding_length' missing, expected an integer >= 1"),
    ({f"{ARCH}.attention.sliding_window": 5000},
     f"metadata '{ARCH}.attention.sliding_window' is 5000, expected an integer in 1..4096"),
    ({f"{ARCH}.attention.head_count_kv": np.array([2, 2, 2], np.int32)},
     f"metadata '{ARCH}.attention.head_count_kv' is an array of 3, expected 4 integers >= 1 (one per layer)"),
    ({f"{ARCH}.attention.head_count_kv": np.array([2, 2, 3, 1], np.int32)},
     f"metadata '{ARCH}.attention.head_count_kv' is [2, 2, 3, 1], expected divisors of the 4 attention heads"),
    ({f"{ARCH}.attention.sliding_window_pattern": np.array([True, False])},
     f"metadata '{ARCH}.attention.sliding_window_pattern' is an array of 2, expected 4 booleans (one per layer)"),
    ({f"{ARCH}.rope.freq_base": 0.0}, f"metadata '{ARCH}.rope.freq_base' is 0.0, expected a finite number > 0"),
    ({f"{ARCH}.attention.layer_norm_rms_epsilon": float("nan")},
     f"metadata '{ARCH}.attention.layer_norm_rms_epsilon' is nan, expected a finite number > 0"),
    ({f"{ARCH}.expert_used_count": 9}, f"metadata '{ARCH}.expert_used_count' is 9, expected an integer in 1..8"),
    ({"tokenizer.ggml.token_type": np.array([1, 1, 1], np.int32)},
     f"tokenizer.ggml.token_type has 3 entries for {N_VOCAB} tokens"),
    ({f"{ARCH}.context_length": "4096"},
     f"metadata '{ARCH}.context_length' is a string ('4096'), expected an integer >= 1"),
    ({"tokenizer.chat_template": "{% for %}"}, "the model's chat template does not compile: "),
    ({"tokenizer.chat_template": 7}, "metadata 'tokenizer.chat_template' is not a string"),
    ({"tokenizer.ggml.tokens": np.arange(N_VOCAB, dtype=np.int32)},
     "metadata 'tokenizer.ggml.tokens' is not an array of strings"),
    ({"tokenizer.ggml.merges": np.arange(10, dtype=np.int32)},
     "metadata 'tokenizer.ggml.merges' is not an array of strings"),
    ({"tokenizer.ggml.token_type": ["1"] * N_VOCAB},
     "metadata 'tokenizer.ggml.token_type' is not an array of integers"),
]


@pytest.mark.parametrize("metadata, expected", BAD_METADATA, ids=[str(list(m)[0]) for m, _ in BAD_METADATA])
def test_impossible_metadata_is_one_line_naming_file_key_found_and_expected(tmp_path, capsys, metadata, expected):
    bad = demo_with(tmp_path, metadata=metadata)
    status, _, err = run(capsys, *ASK, "--model", str(bad))
    assert_one_line_error(status, err, f"{bad}: {expected}")


@pytest.mark.parametrize("embedding, expected", [
    (np.array(1.0, dtype=np.float32), "tensor 'token_embd.weight' has shape (), expected 2 dimensions"),
    (np.zeros((100, 192), np.float32),
     f"tensor 'token_embd.weight' has 100 rows, fewer than the {N_VOCAB:,} tokens of 'tokenizer.ggml.tokens'"),
], ids=["a scalar", "fewer rows than tokens"])
def test_an_embedding_that_does_not_fit_the_vocabulary_is_one_line(tmp_path, capsys, embedding, expected):
    bad = demo_with(tmp_path, replace={"token_embd.weight": embedding})
    status, _, err = run(capsys, *ASK, "--model", str(bad))
    assert_one_line_error(status, err, f"{bad}: {expected}")
    status, out, _ = run(capsys, "models", "info", str(bad))  # what it can tell of the file, and the problem
    assert status == 0 and f"VRAM on CUDA    unknown: {expected}" in out


def test_a_model_name_that_is_not_a_string_gives_way_to_the_file_name(tmp_path, capsys):
    odd = rewrite(DEMO, tmp_path / "odd-name.gguf", metadata={"general.name": np.array([1, 2], np.int32)})
    assert answer_of(capsys, odd)["model"]["name"] == "odd-name"


def test_a_split_tensor_count_that_is_not_an_integer_is_one_line(tmp_path, capsys):
    with open_gguf(DEMO) as f:
        n_tensors = len(f.tensors)
    first, _second = split(DEMO, tmp_path / "demo-00001-of-00002.gguf", 2, tensors_count=[n_tensors] * 2)
    status, _, err = run(capsys, "models", "info", str(first))
    assert_one_line_error(status, err, f"{first}: part 1 of 2 of a split GGUF: its 2 parts hold {n_tensors} tensors, "
                                       "but 'split.tensors.count' is")


@pytest.mark.parametrize("value", [0.0, float("inf"), -2.0])
def test_rope_frequency_divisors_must_be_finite_and_positive(tmp_path, capsys, value):
    with open_gguf(DEMO) as f:
        factors = np.array(f.array("rope_freqs.weight"))
    factors[3] = value
    bad = demo_with(tmp_path, replace={"rope_freqs.weight": factors})
    status, _, err = run(capsys, *ASK, "--model", str(bad))
    assert_one_line_error(status, err, f"{bad}: tensor 'rope_freqs.weight' has {value!r} at index 3, "
                                       "expected finite divisors > 0")


# -- 7. a device that is not there -----------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_on_the_torch_path(capsys):
    status, _, err = run(capsys, *ASK, "--demo", "--device", "cuda")
    assert_one_line_error(status, err, "device 'cuda' requested but no CUDA GPU is available (use --device cpu)")


def test_cuda_without_a_gpu_on_the_llama_path(tmp_path, capsys):
    from dg_chat.engine.backends.llama_lib import library
    from scripts import make_tiny_llama_models as tiny

    if library().llama_supports_gpu_offload():
        pytest.skip("this llama.cpp can offload to a GPU")
    model = tiny.write_model(tmp_path / "dream.gguf", "dream")
    status, _, err = run(capsys, *ASK, "--model", str(model), "--device", "cuda")
    assert_one_line_error(status, err, "device 'cuda' requested but this llama.cpp has no usable GPU")
    assert answer_of(capsys, model, "--device", "cpu")["backend"] == "llama"
    status, _, err = run(capsys, *ASK, "--model", str(model), "--device", "tpu")
    assert_one_line_error(status, err, "option --device: must be auto, cpu, cuda or cuda:N, not 'tpu'")


def test_llama_device_setting(monkeypatch):
    from dg_chat.engine.backends import llama

    assert llama.llama_device("auto") == (None, None) and llama.llama_device("cpu") == (False, None)
    monkeypatch.setattr(llama, "library", lambda: SimpleNamespace(llama_supports_gpu_offload=lambda: True))
    assert llama.llama_device("cuda") == (True, None) and llama.llama_device("cuda:2") == (True, 2)


def test_a_cuda_index_past_the_visible_gpus(monkeypatch):
    from dg_chat.engine.backends.base import BackendError
    from dg_chat.engine.backends.torch_dg.backend import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(BackendError, match=r"^device 'cuda:3' requested but only 1 CUDA GPU\(s\) are visible"):
        resolve_device("cuda:3")


# -- 3. non-finite numbers ---------------------------------------------------------------------

def nan_output_norm(src: Path, dst: Path) -> Path:
    with open_gguf(src) as f:
        shape = f.info("output_norm.weight").shape
    return rewrite(src, dst, replace={"output_norm.weight": np.full(shape, np.nan, dtype=np.float32)})


@pytest.mark.parametrize("kernels", ["reference", "triton"])
def test_nan_logits_stop_the_turn_with_one_line_on_the_torch_path(tmp_path, capsys, kernels):
    broken = nan_output_norm(DEMO, tmp_path / "nan.gguf")
    status, out, err = run(capsys, *ASK, "--model", str(broken), "--device", "cpu", "--kernels", kernels)
    why = f"the model produced NaN/inf values (damaged or mis-converted weights: {broken})"
    assert_one_line_error(status, err, why)
    # --json: no block was committed, nothing of an answer to keep
    assert json.loads(out) == {"text": "", "thinking": "", "stopped": False, "error": why}


def test_nan_logits_stop_the_turn_with_one_line_on_the_llama_path(tmp_path, capsys):
    from scripts import make_tiny_llama_models as tiny

    broken = nan_output_norm(tiny.write_model(tmp_path / "llada.gguf", "llada"), tmp_path / "nan-llada.gguf")
    status, out, err = run(capsys, *ASK, "--model", str(broken))
    assert_one_line_error(status, err,
                          f"the model produced NaN/inf values (damaged or mis-converted weights: {broken})")


def test_a_failed_block_keeps_the_answer_of_the_blocks_before(monkeypatch):
    """The check runs per step, so the blocks committed before a non-finite step stay the answer."""
    from dg_chat.config import SamplerSettings
    from dg_chat.engine.events import BlockCommitted
    from dg_chat.engine.generate import generate
    from dg_chat.engine.sampling import NonFiniteLogits
    from tests.test_sampling import ScriptedBackend

    backend = ScriptedBackend()
    denoise = backend.denoise
    monkeypatch.setattr(backend, "denoise", lambda canvas, sc: denoise(canvas, sc) * (
        float("nan") if len(backend.committed) else 1.0), raising=False)
    backend.path = Path("scripted.gguf")
    events = []
    with pytest.raises(NonFiniteLogits, match="scripted.gguf"):
        for event in generate(backend, [1, 2], SamplerSettings(seed=1, max_steps=3, max_canvases=3),
                              end_ids=frozenset(), parse=lambda ids: ("", str(ids))):
            events.append(event)
    assert [type(e) for e in events if isinstance(e, BlockCommitted)] == [BlockCommitted]


def test_an_end_token_outside_the_vocabulary_is_a_one_line_warning(tmp_path, capsys):
    """The model still answers (it runs to its last canvas); the user is told why it never stops early."""
    from scripts import make_tiny_llama_models as tiny

    for model, vocab, flags in ((demo_with(tmp_path, metadata={"tokenizer.ggml.eos_token_id": N_VOCAB}), N_VOCAB, ()),
                                (tiny.write_model(tmp_path / "llada.gguf", "llada",
                                                  metadata={"tokenizer.ggml.eos_token_id": 384}), 384,
                                 ("--backend", "llama"))):
        status, out, err = run(capsys, *ASK, "--model", str(model), *flags)
        assert status == 0 and json.loads(out)["token_ids"], err
        warning = (f"dg-chat: warning: {model}: metadata 'tokenizer.ggml.eos_token_id' is {vocab}, expected a token "
                   f"id in 0..{vocab - 1} (the vocabulary has {vocab} tokens): the model can never end its answer "
                   "early")
        assert warning in err.splitlines()
