"""The GEMM kernels (kernels/gemm.py) against the reference path: `dg_chat.gguf.dequant.dequantize`
and torch ops in float64, on CPU tensors under Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1).

Error measure: relative error = max|ours - ref| / max|ref| over the whole output. Budgets:
fp32 activations 1e-5 (fp32 accumulation over K <= 2816 gives ~1e-7), fp16 activations 3e-3
(the weight tile is rounded to fp16: ~3e-4). bf16 is checked loosely: the interpreter truncates
fp32 -> bf16 instead of rounding (gpu-engine.md §7.1), so its real numerics are GPU-only.

The interpreter dequantises ~3 M weights a second, so shapes are the real layer shapes
(K = 2816, 2112, 704; N = 1408, 704, 2816 and a ragged 40) spread over the types rather than
their full cross product.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf.constants import GGMLQuantizationType as Q

from dg_chat.engine.backends.torch_dg.kernels import gemm as gemm_module, runtime
from dg_chat.engine.backends.torch_dg.kernels.gemm import (
    Q8Activations,
    SettledRows,
    embedding,
    linear,
    linear_glu,
    mean_row,
    quantize_activations,
    softmax_matmul,
)
from dg_chat.engine.backends.torch_dg.kernels.gguf_tiles import RawWeight
from dg_chat.engine.backends.torch_dg.kernels.runtime import tl, triton
from dg_chat.gguf.dequant import dequantize
from tests.kernels.test_moe import int8_rounded
from tests.support.gguf_samples import quantized
from tests.support.host_sync import NoHostSync

FP32_BUDGET, FP16_BUDGET, BF16_BUDGET = 1e-5, 3e-3, 2e-2
BUDGETS = {torch.float32: FP32_BUDGET, torch.float16: FP16_BUDGET, torch.bfloat16: BF16_BUDGET}


def raw_weight(qtype: Q, rows: int, cols: int, seed: int = 0) -> RawWeight:
    """Random valid GGUF blocks of `qtype` for a [rows, cols] weight."""
    data = quantized(qtype, (rows, cols), np.random.default_rng(seed))
    return RawWeight(torch.from_numpy(np.ascontiguousarray(data)), int(qtype), cols)


def reference(w: RawWeight) -> torch.Tensor:
    """The weight's values in float64, through the reference dequantiser."""
    return dequantize(w.data, w.qtype).double()


def identity(n: int) -> RawWeight:
    """An F32 identity weight: linear(x, I) = x exactly, so the epilogue can be checked alone."""
    return RawWeight(torch.eye(n).view(torch.uint8), int(Q.F32), n)


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max|ours - ref| / max|ref| (the measure of this file's budgets)."""
    return ((ours.double() - ref).abs().max() / ref.abs().max()).item()


def activations(m: int, k: int, dtype: torch.dtype, seed: int = 1) -> torch.Tensor:
    return torch.randn(m, k, generator=torch.Generator().manual_seed(seed)).to(dtype)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


# (type, N, K, M): every kernel type at a real K it allows (K-quants need K % 256 == 0) and
# every real N once or more, including one that is not a multiple of the block.
LINEAR_CASES = {
    torch.float32: [(Q.Q4_K, 1408, 2816, 4), (Q.Q6_K, 40, 2816, 3), (Q.Q8_0, 2816, 704, 5),
                    (Q.Q5_0, 704, 2112, 4), (Q.F32, 40, 2112, 3), (Q.F16, 704, 704, 5),
                    (Q.BF16, 1408, 704, 4)],
    torch.float16: [(Q.Q4_K, 40, 2816, 5), (Q.Q6_K, 704, 2816, 4), (Q.Q8_0, 704, 2112, 3),
                    (Q.Q5_0, 2816, 704, 4), (Q.F32, 704, 704, 4), (Q.F16, 40, 2112, 5),
                    (Q.BF16, 40, 2816, 3)],
    torch.bfloat16: [(Q.Q4_K, 40, 2816, 4), (Q.Q5_0, 40, 704, 3)],
}


@pytest.mark.parametrize(("dtype", "qtype", "n", "k", "m"), [
    pytest.param(dtype, *case, id=f"{str(dtype)[6:]}-{case[0].name}-{case[1]}x{case[2]}")
    for dtype, cases in LINEAR_CASES.items() for case in cases])
def test_linear_matches_the_reference(dtype: torch.dtype, qtype: Q, n: int, k: int, m: int) -> None:
    w = raw_weight(qtype, n, k)
    x = activations(m, k, dtype)
    y = linear(x, w)
    assert y.shape == (m, n) and y.dtype == dtype
    assert relative_error(y, x.double() @ reference(w).T) <= BUDGETS[dtype]


def test_linear_out_dtype() -> None:
    w = raw_weight(Q.Q6_K, 40, 2816)
    x = activations(3, 2816, torch.float16)
    y = linear(x, w, out_dtype=torch.float32)
    assert y.dtype == torch.float32
    assert relative_error(y, x.double() @ reference(w).T) <= FP16_BUDGET


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_softcapped_lm_head(dtype: torch.dtype) -> None:
    """The tied LM head: the Q6_K embedding, c·tanh(y/c) with c = 30, logits well past the cap."""
    w = raw_weight(Q.Q6_K, 300, 2816)
    e = reference(w)
    x = activations(4, 2816, torch.float32)
    x = (x * (100 / (x.double() @ e.T).abs().max())).to(dtype)  # |x @ Eᵀ| up to 100
    y = linear(x, w, softcap=30.0, out_dtype=torch.float32)
    ref = 30 * torch.tanh(x.double() @ e.T / 30)
    assert relative_error(y, ref) <= BUDGETS[dtype]


def test_softcap_epilogue_is_accurate_elementwise() -> None:
    """Through an identity weight y = x exactly, so each output is c·tanh(x/c) alone: a few ulp
    relative, also near 0 where tanh(t) ≈ t."""
    signs = torch.tensor([-1.0, 1.0]).repeat(128)
    x = (signs * torch.logspace(-6, 3, 256)).to(torch.float32)[None, :].repeat(16, 1)
    y = linear(x.contiguous(), identity(256), softcap=30.0)
    ref = 30 * torch.tanh(x.double() / 30)
    assert ((y.double() - ref).abs() / ref.abs()).max().item() <= 1e-6


GLU_CASES = [(torch.float32, Q.Q4_K, Q.Q4_K, 704, 2816, 4), (torch.float16, Q.Q8_0, Q.Q6_K, 40, 2816, 3),
             (torch.float32, Q.F16, Q.Q5_0, 40, 2112, 5), (torch.float16, Q.BF16, Q.F32, 40, 704, 4)]


@pytest.mark.parametrize(("dtype", "gate_type", "up_type", "f", "k", "m"), GLU_CASES,
                         ids=[f"{str(d)[6:]}-{g.name}-{u.name}-{f}x{k}" for d, g, u, f, k, _ in GLU_CASES])
def test_linear_glu_matches_the_reference(dtype: torch.dtype, gate_type: Q, up_type: Q,
                                          f: int, k: int, m: int) -> None:
    gate, up = raw_weight(gate_type, f, k, seed=2), raw_weight(up_type, f, k, seed=3)
    g = reference(gate)
    x = activations(m, k, torch.float32)
    # |x @ gateᵀ| up to 4 spans the GELU's bend; random K-quant blocks would overflow fp16
    x = (x * (4 / (x.double() @ g.T).abs().max())).to(dtype)
    y = linear_glu(x, gate, up)
    assert y.shape == (m, f) and y.dtype == dtype
    ref = gelu_tanh(x.double() @ g.T) * (x.double() @ reference(up).T)
    assert relative_error(y, ref) <= BUDGETS[dtype]


def test_glu_epilogue_is_torch_gelu_tanh() -> None:
    """Identity gate and up: y = gelu_tanh(x)·x, elementwise to 1e-5 of the float64 value, also
    on the negative side where gelu_tanh(x) ≈ 1e-7 x. Below x = -5 torch's own float64 formula
    loses its digits (1 + tanh(u) cancels), so the range stops there; at x = -5 the fp32
    conditioning of σ(z), |z|·ε ≈ 1e-6, sets the floor."""
    x = torch.linspace(-5, 9, 16 * 256, dtype=torch.float32).reshape(16, 256)
    y = linear_glu(x, identity(256), identity(256))
    ref = gelu_tanh(x.double()) * x.double()
    assert ((y.double() - ref).abs() / ref.abs()).nan_to_num().max().item() <= 1e-5  # x = 0: 0/0


def q8_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes int8 [M, K], scales and code sums fp32 [K/32, M]) of x per 32 values, by the
    kernel's own fp32 arithmetic: d = amax/127, codes round(x·(1/d)) with ties away from zero."""
    blocks = x.float().unflatten(-1, (-1, 32))
    d = blocks.abs().amax(-1) / 127
    v = blocks * torch.where(d > 0, 1 / torch.where(d > 0, d, 1), 0)[..., None]
    q = v.sign() * (v.abs() + 0.5).floor()
    return q.flatten(-2).to(torch.int8), d.T.contiguous(), q.sum(-1).T.contiguous()


def dequantized(q8: Q8Activations) -> torch.Tensor:
    """The float64 values [M, K] that quantised activations stand for: codes times scales."""
    return (q8.qa.double().unflatten(-1, (-1, 32)) * q8.da.T.double()[..., None]).flatten(-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_quantize_activations_is_the_reference_rounding(dtype: torch.dtype) -> None:
    """Bit-exact codes, scales and sums, an all-zero block included. From float32 inputs the
    codes are also those of test_moe's float64 `int8_rounded` (what the GEMM oracles below
    multiply; its scales are float64); fp16/bf16 inputs hit exact ties x/d = k + 1/2, where
    rounding x·(1/d) in fp32 decides, so a few codes differ from the float64 division's."""
    x = activations(5, 2816, dtype) * 3
    x[2, 64:96] = 0
    q8 = quantize_activations(x)
    codes, scales, sums = q8_reference(x)
    assert q8.dtype == dtype and q8.shape == (5, 2816)
    assert torch.equal(q8.qa, codes) and torch.equal(q8.da, scales) and torch.equal(q8.sa, sums)
    assert torch.equal(q8.qa[2, 64:96], torch.zeros(32, dtype=torch.int8)) and q8.da[2, 2] == 0
    if dtype == torch.float32:
        torch.testing.assert_close(dequantized(q8), int8_rounded(x.double()), rtol=1e-6, atol=0)


# W4A8 at the real shapes: (gate or linear type, up type or None, N, K, M); M = 70 spans a full and
# a partial row tile, M = 5 one partial tile
INT8_CASES = [(Q.Q4_K, None, 1408, 2816, 5), (Q.Q5_0, None, 704, 2112, 5), (Q.Q8_0, None, 704, 2816, 5),
              (Q.Q4_K, None, 704, 4096, 70), (Q.Q6_K, None, 704, 2816, 5), (Q.Q4_K, Q.Q4_K, 704, 2816, 5),
              (Q.Q8_0, Q.Q5_0, 704, 2112, 5)]


@pytest.mark.parametrize(("first", "second", "n", "k", "m"), INT8_CASES,
                         ids=[f"{'glu' if u else 'linear'}-{g.name}{'-' + u.name if u else ''}-{n}x{k}-m{m}"
                              for g, u, n, k, m in INT8_CASES])
def test_int8_activations(first: Q, second: Q | None, n: int, k: int, m: int) -> None:
    """W4A8 on activations quantised once: exact against the float64 oracle fed the same
    int8-rounded activations (the integer dots are exact; only the fp32 epilogue rounds), and the
    quantisation error against the plain float64 oracle reported and loosely bounded."""
    w = raw_weight(first, n, k, seed=4)
    x = activations(m, k, torch.float32)
    x = x * (4 / (x.double() @ reference(w).T).abs().max())  # GELU's bend, as in the GLU test
    if second is None:
        ours = linear(quantize_activations(x), w)

        def oracle(a: torch.Tensor) -> torch.Tensor:
            return a @ reference(w).T
    else:
        up = raw_weight(second, n, k, seed=5)
        ours = linear_glu(quantize_activations(x), w, up)

        def oracle(a: torch.Tensor) -> torch.Tensor:
            return gelu_tanh(a @ reference(w).T) * (a @ reference(up).T)
    assert ours.shape == (m, n) and ours.dtype == x.dtype
    emulated = relative_error(ours, oracle(int8_rounded(x.double())))
    plain = relative_error(ours, oracle(x.double()))
    print(f"W4A8 {first.name}/{second.name if second else '-'} {n}x{k}: {emulated:.2e} vs int8-rounded oracle, "
          f"{plain:.2e} vs fp64")
    assert emulated <= FP32_BUDGET and plain <= 3e-2


def test_int8_softcapped_lm_head() -> None:
    """The tied LM head in W4A8: the Q6_K embedding, c·tanh(y/c) with c = 30, bf16 activations
    (as on a GPU; the oracle multiplies the values their codes stand for) and fp32 logits."""
    w = raw_weight(Q.Q6_K, 300, 2816)
    e = reference(w)
    x = activations(4, 2816, torch.float32)
    q8 = quantize_activations((x * (100 / (x.double() @ e.T).abs().max())).to(torch.bfloat16))
    y = linear(q8, w, softcap=30.0, out_dtype=torch.float32)
    assert y.dtype == torch.float32
    assert relative_error(y, 30 * torch.tanh(dequantized(q8) @ e.T / 30)) <= FP32_BUDGET


def test_int8_activations_need_integer_quants() -> None:
    q8 = quantize_activations(activations(3, 256, torch.float32))
    with pytest.raises(ValueError, match="int8"):
        linear(q8, raw_weight(Q.F16, 32, 256))
    with pytest.raises(ValueError, match="int8"):
        linear_glu(q8, raw_weight(Q.Q4_K, 32, 256), raw_weight(Q.F16, 32, 256))
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_activations(activations(3, 48, torch.float32))


SOFTMAX_MATMUL_CASES = [
    (Q.Q6_K, 2000, 2816, 4, torch.float32),  # the real embedding type and width; V ragged
    (Q.Q8_0, 2000, 704, 3, torch.float32),
    (Q.BF16, 1500, 704, 5, torch.float32),
    (Q.Q6_K, 1000, 2816, 3, torch.float16),
]


@pytest.mark.parametrize(("qtype", "v", "k", "m", "operand_dtype"), SOFTMAX_MATMUL_CASES,
                         ids=[f"{q.name}-{v}x{k}-{str(d)[6:]}" for q, v, k, _, d in SOFTMAX_MATMUL_CASES])
def test_softmax_matmul_matches_the_reference(qtype: Q, v: int, k: int, m: int,
                                              operand_dtype: torch.dtype) -> None:
    w = raw_weight(qtype, v, k)
    logits = activations(m, v, torch.float32) * 3
    lse = torch.logsumexp(logits, dim=1)
    soft = softmax_matmul(logits, lse, w, operand_dtype=operand_dtype)
    assert soft.shape == (m, k) and soft.dtype == torch.float32
    ref = torch.exp(logits.double() - lse.double()[:, None]) @ reference(w)
    assert relative_error(soft, ref) <= BUDGETS[operand_dtype]


def head_logits(m: int, v: int, head_mass: torch.Tensor, n_head: int = 3, seed: int = 2) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
    """(float32 [m, v] logits, int64 [m, n_head] head): row r puts exactly (to float64 rounding)
    head_mass[r] on `n_head` random tokens, its head (in shares 0.6 : 0.3 : 0.1, the first n_head of
    them), the rest spread by random logits."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(m, v, generator=g, dtype=torch.float64) * 2
    head = torch.stack([torch.randperm(v, generator=g)[:n_head] for _ in range(m)])
    rows = torch.arange(m)[:, None]
    rest = logits.clone()
    rest[rows, head] = -torch.inf
    rest_lse = rest.logsumexp(1, keepdim=True)
    shares = torch.tensor([0.6, 0.3, 0.1][:n_head], dtype=torch.float64)
    shares /= shares.sum()
    logits[rows, head] = rest_lse + torch.log(head_mass[:, None] * shares / (1 - head_mass[:, None]))
    return logits.float(), head


def candidates_of(head: torch.Tensor, v: int, drop: torch.Tensor, k: int = 8, seed: int = 4) -> torch.Tensor:
    """int64 [m, k] candidates as the fused sampler gives them: the head (less its last token in
    the rows of `drop`), other distinct tokens, and V (none) in the last slot."""
    g = torch.Generator().manual_seed(seed)
    out = torch.full((len(head), k), v, dtype=torch.int64)
    for r, row in enumerate(head.tolist()):
        kept = row[:-1] if drop[r] else row
        others = [t for t in torch.randperm(v, generator=g).tolist() if t not in row][:k - 1 - len(kept)]
        out[r, :k - 1] = torch.tensor(kept + others)[torch.randperm(k - 1, generator=g)]
    return out


@pytest.mark.parametrize("operand_dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_settled_rows_take_the_top_k_shortcut_and_the_rest_stay_dense(operand_dtype: torch.dtype) -> None:
    """`SettledRows`: rows whose candidates of p >= tail / K hold p_S >= 1 - tail get
    Σ_S p·E + (1 - p_S)·Ē, within tail·max|E - Ē| of the dense product; the others, scattered over
    the rows and more than one row tile of them, the dense product. Rows on either side of the
    threshold, rows whose candidates miss a token of their head, and all or none settled."""
    tail, m, v = 2.0 ** -9, 150, 1000
    w = raw_weight(Q.Q6_K, v, 2816)
    e = reference(w)
    mean = mean_row(w)
    assert relative_error(mean, e.mean(0)) <= FP32_BUDGET
    g = torch.Generator().manual_seed(3)
    chosen = torch.rand(m, generator=g, dtype=torch.float64) < 0.35  # ~95 unsettled: 2 row tiles
    cases = [(torch.where(chosen, 1 - tail * torch.tensor([0.5, 0.99, 1e-3]).double()[torch.arange(m) % 3],
                          torch.tensor([0.2, 0.9, 1 - 1.01 * tail]).double()[torch.arange(m) % 3]),
              chosen & (torch.arange(m) % 5 == 0)),  # a head token missing: p_S short by 0.1 p_head
             (torch.full((m,), 1 - tail / 4, dtype=torch.float64), torch.zeros(m, dtype=torch.bool)),  # all settled
             (torch.full((m,), 0.5, dtype=torch.float64), torch.zeros(m, dtype=torch.bool))]  # none settled
    for head_mass, drop in cases:
        logits, head = head_logits(m, v, head_mass)
        candidates = candidates_of(head, v, drop)
        lse = torch.logsumexp(logits, 1)
        with runtime.counting() as counter, NoHostSync():
            soft = softmax_matmul(logits, lse, w, operand_dtype=operand_dtype,
                                  settled=SettledRows(candidates, mean, tail))
        assert counter.launches == 3  # finding the settled rows, the dense kernel, the combine (adds the V chunks)
        p = torch.exp(logits.double() - lse.double()[:, None])
        dense = p @ e
        p_candidates = torch.where(candidates < v, p.gather(1, candidates.clamp(max=v - 1)), 0.0)
        in_s = p_candidates >= tail / candidates.shape[1]
        p_s = (p_candidates * in_s).sum(1)
        settled = p_s >= 1 - tail
        assert settled.tolist() == ((head_mass >= 1 - tail) & ~drop).tolist()
        if (~settled).any():
            assert relative_error(soft[~settled], dense[~settled]) <= BUDGETS[operand_dtype]
        if settled.any():
            gathered = e[candidates.clamp(max=v - 1)]  # [m, K, k]
            shortcut = ((p_candidates * in_s)[:, :, None] * gathered).sum(1) + (1 - p_s)[:, None] * e.mean(0)
            assert relative_error(soft[settled], shortcut[settled]) <= FP32_BUDGET
            bound = tail * (e - e.mean(0)).abs().max() + FP32_BUDGET * dense.abs().max()
            assert (soft[settled].double() - dense[settled]).abs().max() <= bound


@triton.jit
def _unsettled_rows_kernel(settled_ptr, rows_ptr, count_ptr, M, M_ALL: tl.constexpr, BLOCK: tl.constexpr):
    slots = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rows, count = gemm_module._unsettled_rows(settled_ptr, slots, M, M_ALL)
    tl.store(rows_ptr + slots, rows)
    tl.store(count_ptr + tl.program_id(0), count)


def test_the_dense_kernel_gets_the_unsettled_rows_in_order_and_skips_the_rest() -> None:
    """`_unsettled_rows`, which places the dense kernel's row tiles: the unsettled rows in order,
    then M; their count, 0 when every row is settled (no dense tile reads E). A NaN row is never
    settled: it comes out NaN, not from unwritten memory."""
    tail, m, v, block = 2.0 ** -9, 70, 300, 32
    w = raw_weight(Q.Q8_0, v, 64)
    for head_mass in (torch.where(torch.arange(m) % 3 == 0, 1 - tail / 2, 0.6).double(),
                      torch.full((m,), 1 - tail / 2, dtype=torch.float64)):
        logits, head = head_logits(m, v, head_mass)
        nan_row = head_mass.min() < 0.9
        if nan_row:
            logits[4] = float("nan")
        lse, candidates = torch.logsumexp(logits, 1), candidates_of(head, v, torch.zeros(m, dtype=torch.bool))
        soft = softmax_matmul(logits, lse, w, settled=SettledRows(candidates, mean_row(w), tail))
        settled = torch.tensor([bool(head_mass[r] >= 1 - tail) and not (r == 4 and nan_row) for r in range(m)])
        slots = triton.cdiv(m, block) * block
        rows, count = torch.empty(slots, dtype=torch.int32), torch.empty(slots // block, dtype=torch.int32)
        _unsettled_rows_kernel[(slots // block,)](settled.int(), rows, count, m, M_ALL=triton.next_power_of_2(m),
                                                  BLOCK=block)
        expected = [r for r in range(m) if not settled[r]]
        assert rows.tolist() == expected + [m] * (slots - len(expected))
        assert count.tolist() == [len(expected)] * (slots // block)
        assert torch.isnan(soft[4]).all() == nan_row
        assert torch.isfinite(soft[torch.arange(m) != 4]).all()


def test_settled_rows_are_checked() -> None:
    w = raw_weight(Q.Q8_0, 64, 64)
    x = activations(3, 64, torch.float32)
    lse, mean, candidates = torch.logsumexp(x, 1), torch.zeros(64), torch.zeros(3, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match="tail"):
        softmax_matmul(x, lse, w, settled=SettledRows(candidates, mean, 1.0))
    for bad in (candidates.int(), candidates[:, 0], torch.zeros(3, 0, dtype=torch.int64)):
        with pytest.raises(ValueError, match="candidates"):
            softmax_matmul(x, lse, w, settled=SettledRows(bad, mean, 0.01))
    with pytest.raises(ValueError, match="mean"):
        softmax_matmul(x, lse, w, settled=SettledRows(candidates, torch.zeros(32), 0.01))


EMBEDDING_CASES = [(Q.Q4_K, 2816), (Q.Q6_K, 2816), (Q.Q8_0, 2112), (Q.Q5_0, 704), (Q.F32, 704), (Q.F16, 2112),
                   (Q.BF16, 704)]


@pytest.mark.parametrize(("qtype", "k"), EMBEDDING_CASES, ids=[q.name for q, _ in EMBEDDING_CASES])
def test_embedding_is_bit_exact_in_fp32(qtype: Q, k: int) -> None:
    w = raw_weight(qtype, 300, k)
    ids = torch.tensor([0, 299, 7, 7, 150])
    expected = reference(w)[ids].float() * 53.0
    assert torch.equal(embedding(ids, w, 53.0, torch.float32), expected)
    assert torch.equal(embedding(ids, w, torch.tensor([53.0]), torch.float32), expected)


def test_embedding_scale_tensor_and_low_precision() -> None:
    """A device-side scale (any float dtype) and fp16/bf16 output: one rounding of the fp32
    product (bf16 only to within truncation under the interpreter)."""
    w = raw_weight(Q.Q6_K, 100, 2816)
    ids = torch.tensor([3, 99, 0])
    scale = torch.tensor(2816 ** 0.5, dtype=torch.bfloat16)
    exact = reference(w)[ids].float() * scale.float()
    assert torch.equal(embedding(ids, w, scale, torch.float16), exact.half())
    assert relative_error(embedding(ids, w, scale, torch.bfloat16), exact.double()) <= 2 ** -7


def test_one_launch_each_and_no_host_sync() -> None:
    w = raw_weight(Q.Q8_0, 64, 64)
    x = activations(3, 64, torch.float32)
    ids, lse = torch.tensor([1, 2]), torch.logsumexp(x, 1)
    q8 = quantize_activations(x)
    calls = [lambda: linear(x, w, softcap=30.0), lambda: linear_glu(x, w, w), lambda: quantize_activations(x),
             lambda: linear(q8, w, softcap=30.0), lambda: linear_glu(q8, w, w),
             lambda: softmax_matmul(x, lse, w), lambda: embedding(ids, w, 2.0, torch.float32),
             lambda: embedding(ids, w, torch.tensor(2.0), torch.float32)]
    for call in calls:
        with runtime.counting() as counter, NoHostSync():
            call()
            assert counter.launches == 1


def test_rejects_mismatched_inputs() -> None:
    w = raw_weight(Q.Q8_0, 64, 64)
    with pytest.raises(ValueError, match=r"\[M, 64\]"):
        linear(activations(3, 32, torch.float32), w)
    with pytest.raises(ValueError, match="float32/float16/bfloat16"):
        linear(torch.ones(3, 64, dtype=torch.float64), w)
    with pytest.raises(ValueError, match="gate is"):
        linear_glu(activations(3, 64, torch.float32), w, raw_weight(Q.Q8_0, 32, 64))
    with pytest.raises(ValueError, match="lse"):
        softmax_matmul(activations(3, 64, torch.float32), torch.zeros(4), w)
    with pytest.raises(ValueError, match="operand_dtype"):
        softmax_matmul(activations(3, 64, torch.float32), torch.zeros(3), w, operand_dtype=torch.float64)
    with pytest.raises(ValueError, match="int64 ids"):
        embedding(torch.tensor([1, 2], dtype=torch.int32), w, 1.0, torch.float32)
