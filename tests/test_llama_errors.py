"""Broken and unsupported GGUFs give one-line errors; libllama never aborts our process.

Every case is loaded in ONE child process (loading libllama costs a second): a C abort (SIGABRT)
would kill that child, so the exit code and stderr prove that none happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from scripts import make_tiny_llama_models as tiny

ROOT = Path(__file__).resolve().parent.parent

# name -> (architecture, write_model options, expected part of the message)
CASES = {
    # stage 1: our own GGUF reader and checks
    "not_a_gguf": (None, {}, "not a GGUF file"),
    "truncated": (None, {}, "truncated file"),
    "diffusion_gemma": ("dream", {"metadata": {"general.architecture": "diffusion-gemma"}},
                        "'diffusion-gemma' is not an architecture the llama.cpp backend runs"),
    "no_mask_token": ("dream", {"metadata": {"tokenizer.ggml.mask_token_id": None}}, "needs a mask token"),
    "mask_outside_vocab": ("llada", {"metadata": {"tokenizer.ggml.mask_token_id": 100000}},
                           "metadata 'tokenizer.ggml.mask_token_id' is 100000, expected a token id in 0..383"),
    "eos_as_string": ("dream", {"metadata": {"tokenizer.ggml.eos_token_id": "1"}},
                      "metadata 'tokenizer.ggml.eos_token_id' is a string ('1'), expected a token id in 0..383"),
    "zero_eps": ("rnd1", {"metadata": {"rnd1.attention.layer_norm_rms_epsilon": 0.0}},
                 "metadata 'rnd1.attention.layer_norm_rms_epsilon' is 0.0, expected a finite number > 0"),
    "nan_rope_base": ("dream", {"metadata": {"dream.rope.freq_base": float("nan")}},
                      "metadata 'dream.rope.freq_base' is nan, expected a finite number > 0"),
    "no_context_length": ("llada", {"metadata": {"llada.context_length": None}},
                          "metadata 'llada.context_length' missing, expected an integer >= 1"),
    "kv_heads_not_dividing": ("dream", {"metadata": {"dream.attention.head_count_kv": 3}},
                              "metadata 'dream.attention.head_count_kv' is [3, 3], expected divisors"),
    # stage 2: libllama errors that it reports itself
    "missing_tensor": ("dream", {"skip_tensors": {"blk.1.attn_q.weight"}}, "tensor 'blk.1.attn_q.weight' not found"),
    "wrong_shape": ("llada", {"metadata": {"llada.embedding_length": 32}}, "has wrong shape"),
    "unknown_tokenizer": ("rnd1", {"metadata": {"tokenizer.ggml.model": "bogus"}}, "unknown tokenizer: 'bogus'"),
    # stage 1: metadata on which libllama would abort the process (GGML_ASSERT), refused before it sees it
    "zero_layers": ("dream", {"metadata": {"dream.block_count": 0}},
                    "metadata 'dream.block_count' is 0, expected an integer >= 1"),
    "too_many_experts_used": ("llada-moe", {"metadata": {"llada-moe.expert_used_count": 8}},
                              "metadata 'llada-moe.expert_used_count' is 8, expected an integer in 1..4"),
    "moe_without_experts": ("llada-moe", {"metadata": {"llada-moe.expert_count": None}},
                            "metadata 'llada-moe.expert_count' missing, expected an integer >= 1"),
    # stage 2: metadata on which libllama aborts the process (GGML_ASSERT)
    "unknown_rope_scaling": ("dream", {"metadata": {"dream.rope.scaling.type": "bogus"}},
                             "GGML_ASSERT(hparams.rope_scaling_type_train"),
    "rope_dimension": ("dream", {"metadata": {"dream.rope.dimension_count": 8}}, "GGML_ASSERT(n_embd_head == n_rot)"),
    "head_sizes": ("dream", {"metadata": {"dream.attention.key_length": 32}}, "GGML_ASSERT(n_embd_head =="),
}

CHILD = r"""
import json, sys, torch
from dg_chat.engine.backends.llama import LlamaBackend
from dg_chat.errors import DgChatError
for path in sys.argv[2:]:
    try:
        LlamaBackend(path, n_threads=1).close()
        message = None
    except DgChatError as exc:
        message = str(exc)
    print(json.dumps([path, message]), flush=True)
# the decode guard: a batch over n_ubatch aborts libllama, so it must raise before the call
backend = LlamaBackend(sys.argv[1], n_threads=1)
backend.prefill([1, 2])
try:
    backend.denoise(torch.full((backend.context_length,), backend.mask_token_id), None)
except DgChatError as exc:
    print(json.dumps(["oversized batch", str(exc)]), flush=True)
"""


def write_case(directory: Path, name: str, arch: str | None, options: dict) -> Path:
    path = directory / f"{name}.gguf"
    if name == "not_a_gguf":
        path.write_bytes(b"PK\x03\x04 this is a zip file, not a model")
    elif name == "truncated":
        data = tiny.write_model(directory / "whole.gguf", "dream").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        tiny.write_model(path, arch, **options)
    return path


def test_broken_ggufs_give_one_line_errors_and_never_abort(tmp_path):
    good = tiny.write_model(tmp_path / "good.gguf", "llada")
    paths = {name: write_case(tmp_path, name, arch, options) for name, (arch, options, _) in CASES.items()}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", CHILD, str(good), *map(str, paths.values())], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"the child died (exit {done.returncode}): {done.stderr[-2000:]}"
    results = dict(json.loads(line) for line in done.stdout.splitlines())
    for name, (_, _, expected) in CASES.items():
        message = results[str(paths[name])]
        assert message is not None, f"{name}: loaded without error"
        assert expected in message, f"{name}: {message}"
        assert "\n" not in message and message.startswith(str(paths[name]))
    assert "do not fit" in results["oversized batch"]


def test_a_file_that_aborts_libllama_really_aborts_it(tmp_path):
    """The preflight is needed: loading this file directly with libllama kills the process."""
    arch, options, _ = CASES["zero_layers"]
    path = write_case(tmp_path, "zero_layers", arch, options)
    code = ("import sys, llama_cpp.llama_cpp as L\nL.llama_backend_init()\n"
            "L.llama_model_load_from_file(sys.argv[1].encode(), L.llama_model_default_params())")
    env = dict(os.environ, GGML_NO_BACKTRACE="1")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == -6 and "GGML_ASSERT" in done.stderr
