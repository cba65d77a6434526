"""`scripts/bench.py kernels --quick`: launch counts per decode step and kernel errors, under the
interpreter. The launch and sync numbers are the fast path's goals (gpu-engine.md §1, §6.7): a
failure here is a regression of the engine, not of the benchmark."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.scripts import load_script

MAX_LAUNCHES_PER_LAYER = 24
MAX_LAUNCHES_PER_STEP = 800
ERROR_LIMIT = {"fp32": 1e-5, "fp16": 3e-3}


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return load_script("benchmarks/kernels").main(["--quick"])


def test_reports_what_was_measured_and_what_computed(report: dict[str, Any]) -> None:
    launches = report["launches"]
    assert report["quick"] is True
    assert {"measured", "computed", "per_layer", "prologue", "epilogue", "lm_head", "sampler",
            "real_model", "goal", "goal_met"} <= launches.keys()
    assert launches["per_layer"].keys() == {"sliding", "full"}
    for section in [*launches["per_layer"].values(), launches["prologue"], launches["lm_head"]]:
        assert section["launches"] == section["triton_launches"] + section["aten_launches"] > 0
    real = launches["real_model"]
    assert (real["sliding_layers"], real["full_layers"]) == (25, 5)
    assert real["layers_launches"] == 25 * launches["per_layer"]["sliding"]["launches"] \
        + 5 * launches["per_layer"]["full"]["launches"]


def test_a_decode_layer_stays_within_its_launch_budget(report: dict[str, Any]) -> None:
    for kind, layer in report["launches"]["per_layer"].items():
        assert layer["launches"] <= MAX_LAUNCHES_PER_LAYER, (kind, layer)
        assert layer["triton_by_kernel"]["_gate_up_kernel"] == layer["triton_by_kernel"]["_down_kernel"] == 1


def test_a_decode_step_stays_within_its_launch_budget_and_never_syncs(report: dict[str, Any]) -> None:
    launches = report["launches"]
    step = launches["real_model"]["step"]
    assert step["launches"] <= MAX_LAUNCHES_PER_STEP, step
    assert step["host_syncs"] == 0, {name: section["host_syncs_by_op"] for name, section in
                                     [*launches["per_layer"].items(), ("prologue", launches["prologue"])]}
    assert launches["unattributed_aten_ops"] == {}


def test_kernel_errors_are_within_tolerance(report: dict[str, Any]) -> None:
    errors = report["errors"]
    assert {"F32", "F16", "BF16", "Q8_0", "Q5_0", "Q4_K", "Q6_K"} == {key.split()[0] for key in errors["linear"]}
    assert errors["experts"]
    for case in [*errors["linear"].values(), *errors["experts"].values()]:
        for dtype, error in case.items():
            assert 0 <= error < ERROR_LIMIT[dtype], (dtype, error)
