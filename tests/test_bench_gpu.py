"""`scripts/bench.py gpu`: its --smoke mode runs the GPU benchmark's code (the same layout
writer, phases and JSON) on a tiny model on the CPU; without CUDA and without --smoke it refuses
in one line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.scripts import ROOT, load_script

PHASES = ("environment", "weights", "triton", "reference", "accuracy", "triton_int8")
BACKEND_NUMBERS = ("load_s", "prefill_s", "decode_ms_per_step", "tok_s_at_14_steps", "tok_s_at_48_steps")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench-gpu") / "bench-gpu.json"
    return load_script("benchmarks/gpu").main(["--smoke", "--out", str(out)]), out


def test_smoke_runs_every_phase_and_writes_the_json(smoke: tuple[dict[str, Any], Path]) -> None:
    report, out = smoke
    assert report["smoke"] is True
    assert {name: report["phases"][name]["status"] for name in PHASES} == dict.fromkeys(PHASES, "ok")
    assert json.loads(out.read_text()) == json.loads(json.dumps(report, default=str))
    assert {"torch", "triton", "name", "capability", "sms", "memory_free_bytes"} <= report["environment"].keys()
    assert report["phases"]["weights"]["file_bytes"] > 0
    assert isinstance(report["summary"], str) and "\n" not in report["summary"]


def test_both_kernel_choices_produce_finite_numbers(smoke: tuple[dict[str, Any], Path]) -> None:
    phases = smoke[0]["phases"]
    for kernels in ("triton", "reference"):
        phase = phases[kernels]
        assert phase["kernels"] == kernels and phase["logits_finite"] is True
        for key in BACKEND_NUMBERS:
            assert math.isfinite(phase[key]) and phase[key] > 0, (kernels, key, phase[key])
        assert "peak_vram_bytes" in phase and "decode_with_sampler_ms_per_step" in phase
    # same prompt and canvas, float32 on the CPU: the two paths agree closely
    assert phases["reference"]["logits_vs_triton"]["rms_rel"] < 1e-4


def test_the_int8_phase_times_the_w4a8_path(smoke: tuple[dict[str, Any], Path]) -> None:
    phase = smoke[0]["phases"]["triton_int8"]
    assert phase["kernels"] == "triton" and phase["int8_activations"] is True and phase["logits_finite"] is True
    assert math.isfinite(phase["decode_ms_per_step"]) and phase["decode_ms_per_step"] > 0
    assert 0 < phase["logits_vs_triton"]["rms_rel"] < 0.1  # the activation quantisation error


def test_accuracy_covers_a_linear_and_both_expert_down_types(smoke: tuple[dict[str, Any], Path]) -> None:
    accuracy = smoke[0]["phases"]["accuracy"]
    for key in ("linear_attn_q", "experts_q8_0_down", "experts_q5_0_down"):
        assert accuracy[key]["finite"] is True
        assert 0 <= accuracy[key]["rms_rel"] < 1e-5 and 0 <= accuracy[key]["max_rel"] < 1e-5  # float32 here
    assert 0 < accuracy["linear_attn_q_int8"]["rms_rel"] < 3e-2  # W4A8: the activation quantisation error


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_refuses_in_one_line() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "gpu"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert run.returncode != 0
    assert run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and "CUDA" in run.stderr
