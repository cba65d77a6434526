"""The grouped MoE kernels (kernels/moe.py) under Triton's interpreter.

`align` is checked against its invariants; `experts` against a float64 oracle built from
`dg_chat.gguf.dequant.dequantize`, at the real expert shapes (H = 2816, F = 704, 128 experts,
top-8) with a few tokens, and at small shapes for the other weight types. Error =
max|ours − oracle| / max|oracle|.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as Q

from dg_chat.engine.backends.torch_dg.kernels import runtime
from dg_chat.engine.backends.torch_dg.kernels.gguf_tiles import RawWeight
from dg_chat.engine.backends.torch_dg.kernels.moe import align, em_max, experts
from dg_chat.gguf.dequant import dequantize
from tests.support.gguf_samples import quantized

HIDDEN, WIDTH, N_EXPERTS, TOP_K = 2816, 704, 128, 8
TOLERANCE = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 3e-2}
"""bf16: the interpreter truncates f32 -> bf16 casts (gpu-engine.md §7.1), so only a loose check."""


def _routing(tokens: int, top_k: int, n_experts: int, seed: int,
             allowed: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct experts per token (from `allowed` if given) and renormalised weights scaled
    like the per-expert scale does: int64 top_i [T, k], float32 top_w [T, k]."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.tensor(allowed if allowed is not None else range(n_experts))
    top_i = torch.stack([pool[torch.randperm(len(pool), generator=g)[:top_k]] for _ in range(tokens)])
    top_w = torch.rand(tokens, top_k, generator=g) + 0.1
    scale = torch.rand(n_experts, generator=g) + 0.5
    return top_i, top_w / top_w.sum(-1, keepdim=True) * scale[top_i]


def _check_alignment(top_i: torch.Tensor, n_experts: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    sorted_ids, expert_ids = align(top_i, n_experts, block_m)
    flat, n = top_i.flatten(), top_i.numel()
    assert sorted_ids.dtype == expert_ids.dtype == torch.int32
    assert sorted_ids.shape == (em_max(n, n_experts, block_m),) and sorted_ids.numel() % block_m == 0
    assert expert_ids.shape == (sorted_ids.numel() // block_m,)
    real = sorted_ids[sorted_ids < n].long()
    assert torch.equal(real.sort().values, torch.arange(n)), "every assignment exactly once"
    assert ((sorted_ids < n) | (sorted_ids == n)).all(), "padding holds the sentinel T·k"
    blocks = sorted_ids.view(-1, block_m)
    used = expert_ids >= 0
    assert torch.equal(used, (blocks < n).any(1)), "-1 exactly on the blocks without assignments"
    assert torch.equal(used, torch.arange(len(used)) < used.sum()), "-1 only as a tail"
    for block, expert in zip(blocks[used], expert_ids[used], strict=True):
        assert (flat[block[block < n].long()] == expert).all(), "a block holds one expert"
    counts = torch.bincount(flat, minlength=n_experts)
    assert torch.equal(torch.bincount(expert_ids[used].long(), minlength=n_experts),
                       (counts + block_m - 1) // block_m), "runs padded to whole blocks, empty experts absent"
    return sorted_ids, expert_ids


@pytest.mark.parametrize("tokens, top_k, n_experts, block_m", [
    (256, 8, 128, 16),  # a decode step at the real shapes
    (3, 8, 128, 32),  # most experts empty, most blocks -1
    (5, 2, 4, 16),
    (7, 2, 6, 4),  # E not a power of two
])
def test_align_invariants(tokens, top_k, n_experts, block_m):
    top_i, _ = _routing(tokens, top_k, n_experts, seed=tokens)
    sorted_ids, expert_ids = _check_alignment(top_i, n_experts, block_m)
    again = align(top_i, n_experts, block_m)
    assert torch.equal(again[0], sorted_ids) and torch.equal(again[1], expert_ids), "deterministic"


def test_align_with_experts_receiving_no_rows():
    top_i, _ = _routing(6, 2, 8, seed=1, allowed=[1, 4, 7])
    _, expert_ids = _check_alignment(top_i.int(), 8, 16)
    assert expert_ids.tolist() == [1, 4, 7] + [-1] * (len(expert_ids) - 3)  # runs in expert order


def test_align_is_one_launch():
    top_i, _ = _routing(4, 2, 4, seed=0)
    with runtime.counting() as counter:
        align(top_i, 4, 16)
        assert counter.launches == 1


def _random_blocks(qtype: Q, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Q5_0/Q8_0 rows of random quants with small fp16 scales: every byte pattern is valid, and
    this skips quantising a quarter-billion floats for the real down tensor."""
    block, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, (*shape[:-1], shape[-1] // block, type_size), dtype=np.uint8)
    blocks[..., 0:2] = rng.uniform(-1e-2, 1e-2, blocks.shape[:-1] + (1,)).astype(np.float16).view(np.uint8)
    return blocks.reshape(*shape[:-1], -1)


def _weight(qtype: Q, n_experts: int, rows: int, cols: int, seed: int) -> RawWeight:
    rng = np.random.default_rng(seed)
    big = n_experts * rows * cols > 10**7
    make = _random_blocks if big and qtype in (Q.Q5_0, Q.Q8_0) else quantized
    return RawWeight(torch.from_numpy(make(qtype, (n_experts, rows, cols), rng)), int(qtype), cols)


def int8_rounded(a: torch.Tensor) -> torch.Tensor:
    """a [..., K] with every 32 values replaced by their int8 quantisation times its scale
    (d = amax/127, round half away from zero): what the W4A8 kernels multiply, in float64."""
    blocks = a.unflatten(-1, (-1, 32))
    d = blocks.abs().amax(-1, keepdim=True) / 127
    v = blocks / torch.where(d > 0, d, 1)
    return (v.sign() * (v.abs() + 0.5).floor() * d).flatten(-2)


def _oracle(x: torch.Tensor, gate_up: RawWeight, down: RawWeight, top_i: torch.Tensor, top_w: torch.Tensor,
            inputs: Callable[[torch.Tensor], torch.Tensor] = lambda a: a) -> torch.Tensor:
    """float64 [T, H]: Σ_slot w · down_e(gelu_tanh(gate_e(x)) · up_e(x)) from dequantised experts,
    `inputs` applied to the input of each matmul."""
    width = down.cols
    x64, out = inputs(x.double()), torch.zeros(x.shape, dtype=torch.float64)
    for e in top_i.unique().tolist():
        t, slot = (top_i == e).nonzero(as_tuple=True)
        gate, up = (x64[t] @ dequantize(gate_up.data[e], gate_up.qtype).double().T).split(width, dim=-1)
        y = inputs(F.gelu(gate, approximate="tanh") * up) @ dequantize(down.data[e], down.qtype).double().T
        out.index_add_(0, t, y * top_w[t, slot, None].double())
    return out


def _inputs(gate_up: RawWeight, tokens: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """x [T, H] in `dtype`, scaled so that the gate pre-activations are O(1) (GELU's curved part)."""
    rms = dequantize(gate_up.data[0, :64], gate_up.qtype).pow(2).mean().sqrt()
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(tokens, gate_up.cols, generator=g) * (1.5 / (rms * gate_up.cols ** 0.5))).to(dtype)


def _check_experts(gate_up: RawWeight, down: RawWeight, tokens: int, top_k: int, dtype: torch.dtype, seed: int,
                   allowed: list[int] | None = None, block_m: int | None = None) -> None:
    top_i, top_w = _routing(tokens, top_k, gate_up.data.shape[0], seed, allowed)
    x = _inputs(gate_up, tokens, dtype, seed)
    ours = experts(x, gate_up, down, top_i, top_w, block_m=block_m)
    ref = _oracle(x, gate_up, down, top_i, top_w)
    assert ours.dtype == dtype and ours.shape == x.shape
    error = ((ours.double() - ref).abs().max() / ref.abs().max()).item()
    print(f"{Q(gate_up.qtype).name}->{Q(down.qtype).name} {dtype}: relative error {error:.2e}")
    assert error <= TOLERANCE[dtype]


@pytest.fixture(scope="module")
def real_gate_up() -> RawWeight:
    """The real Q4_K ffn_gate_up_exps shape: [128, 1408, 2816] (285 MB of blocks)."""
    return _weight(Q.Q4_K, N_EXPERTS, 2 * WIDTH, HIDDEN, seed=1)


@pytest.mark.parametrize("down_type, dtype", [(Q.Q5_0, torch.float32), (Q.Q8_0, torch.float16)],
                         ids=["Q5_0-fp32", "Q8_0-fp16"])
def test_experts_at_the_real_shapes(real_gate_up, down_type, dtype):
    down = _weight(down_type, N_EXPERTS, HIDDEN, WIDTH, seed=2)
    # 4 tokens over the same 8 experts (spread up to the last): 8 row-blocks of 4 rows each,
    # 120 empty experts; the interpreter's time grows with the row-blocks, not the rows
    _check_experts(real_gate_up, down, tokens=4, top_k=TOP_K, dtype=dtype, seed=3,
                   allowed=[0, 5, 31, 64, 65, 100, 126, 127])


@pytest.mark.parametrize("gate_up_type, down_type", [(Q.Q8_0, Q.Q5_0), (Q.F16, Q.F16), (Q.Q4_K, Q.Q8_0)],
                         ids=lambda t: t.name)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_experts_at_a_small_shape(gate_up_type, down_type, dtype):
    hidden, width = 512, 96  # F not a multiple of the column tiles: masked tails
    gate_up = _weight(gate_up_type, 8, 2 * width, hidden, seed=4)
    down = _weight(down_type, 8, hidden, width, seed=5)
    _check_experts(gate_up, down, tokens=4, top_k=2, dtype=dtype, seed=6)


def test_experts_with_empty_experts_and_block_m_32():
    gate_up = _weight(Q.Q4_K, 8, 2 * 64, 256, seed=7)
    down = _weight(Q.Q5_0, 8, 256, 64, seed=8)
    _check_experts(gate_up, down, tokens=5, top_k=2, dtype=torch.float32, seed=9, allowed=[0, 3, 6], block_m=32)


def test_block_m_must_suit_tl_dot():
    gate_up = _weight(Q.Q8_0, 4, 2 * 32, 64, seed=13)
    down = _weight(Q.Q8_0, 4, 64, 32, seed=14)
    top_i, top_w = _routing(2, 2, 4, seed=15)
    with pytest.raises(ValueError, match="block_m"):
        experts(torch.randn(2, 64), gate_up, down, top_i, top_w, block_m=24)


def test_experts_bf16_runs_close():
    gate_up = _weight(Q.Q4_K, 4, 2 * 64, 256, seed=10)
    down = _weight(Q.Q8_0, 4, 256, 64, seed=11)
    _check_experts(gate_up, down, tokens=3, top_k=2, dtype=torch.bfloat16, seed=12)


def test_experts_is_three_launches():
    gate_up = _weight(Q.Q8_0, 4, 2 * 32, 64, seed=13)
    down = _weight(Q.Q8_0, 4, 64, 32, seed=14)
    top_i, top_w = _routing(2, 2, 4, seed=15)
    with runtime.counting() as counter:
        experts(torch.randn(2, 64), gate_up, down, top_i, top_w)
        assert counter.launches == 3


# (gate_up type, down type, weight seed); with seed 16 the Q6_K case's GeGLU output has a rounding
# tie between its fp32 and float64 values (one int8 code apart, 7e-5)
INT8_CASES = [(Q.Q4_K, Q.Q5_0, 16), (Q.Q4_K, Q.Q8_0, 16), (Q.Q8_0, Q.Q8_0, 16), (Q.Q6_K, Q.Q8_0, 30)]


@pytest.mark.parametrize("gate_up_type, down_type, seed", INT8_CASES,
                         ids=[f"{g.name}-{d.name}" for g, d, _ in INT8_CASES])
def test_int8_activations(gate_up_type, down_type, seed):
    """W4A8: exact against an oracle fed the same int8-rounded inputs (the integer dots are exact;
    only fp32 epilogues and rare rounding ties of the GeGLU output differ), and the error that
    the activation quantisation adds against the plain oracle."""
    gate_up = _weight(gate_up_type, 8, 2 * 96, 512, seed=seed)
    down = _weight(down_type, 8, 512, 96, seed=seed + 1)
    top_i, top_w = _routing(4, 2, 8, seed=18)
    x = _inputs(gate_up, 4, torch.float32, seed=18)
    ours = experts(x, gate_up, down, top_i, top_w, int8_activations=True).double()

    def error(ref: torch.Tensor) -> float:
        return ((ours - ref).abs().max() / ref.abs().max()).item()

    emulated = error(_oracle(x, gate_up, down, top_i, top_w, int8_rounded))
    plain = error(_oracle(x, gate_up, down, top_i, top_w))
    print(f"W4A8 {gate_up_type.name}->{down_type.name}: {emulated:.2e} vs int8-rounded oracle, {plain:.2e} vs fp64")
    assert emulated <= 1e-5 and plain <= 3e-2


def test_int8_activations_need_integer_quants():
    gate_up = _weight(Q.F16, 4, 2 * 32, 64, seed=19)
    down = _weight(Q.Q8_0, 4, 64, 32, seed=20)
    top_i, top_w = _routing(2, 2, 4, seed=21)
    with pytest.raises(ValueError, match="int8"):
        experts(torch.randn(2, 64), gate_up, down, top_i, top_w, int8_activations=True)
