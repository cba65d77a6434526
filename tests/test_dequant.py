"""dg_chat.gguf.dequant against gguf.quants.dequantize (the numpy reference).

Tolerance: none. Both sides decode the same integers and scales and apply the same float32
operations (one multiply, then one add or subtract: never a fused multiply-add) in the same
order, and IEEE float32 arithmetic is exactly rounded, so the values must be bit-identical.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import quants
from gguf.constants import GGMLQuantizationType as Q

from dg_chat.gguf.dequant import SUPPORTED_TYPES, check_supported, dequantize, load_tensor, tensor_bytes
from dg_chat.gguf.reader import GGUFError, open_gguf
from tests.support.gguf_samples import K_SCALE_OFFSETS, QUANTIZABLE, SAMPLE_TENSORS, quantized, write_sample

ALL_TYPES = (*QUANTIZABLE, *K_SCALE_OFFSETS)


def _reference(raw: np.ndarray, qtype: Q) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(quants.dequantize(raw, qtype), dtype=np.float32))


def _assert_identical(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.dtype == torch.float32 and ours.shape == ref.shape
    assert torch.isfinite(ref).all()  # the samples are valid: a NaN would hide differences
    assert torch.equal(ours, ref), f"max abs diff {(ours - ref).abs().max().item()}"


def test_every_type_of_the_brief_is_supported():
    assert SUPPORTED_TYPES == set(ALL_TYPES)


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_matches_gguf_quants(qtype):
    raw = quantized(qtype, (48, 512), np.random.default_rng(int(qtype)))
    _assert_identical(dequantize(torch.from_numpy(raw), qtype), _reference(raw, qtype))


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_expert_tensor_and_selected_experts(qtype):
    raw = quantized(qtype, (6, 8, 256), np.random.default_rng(100 + int(qtype)))
    ref = _reference(raw, qtype)
    experts = torch.from_numpy(raw)
    _assert_identical(dequantize(experts, qtype), ref)
    ids = torch.tensor([4, 1, 4])
    _assert_identical(dequantize(experts[ids], qtype), ref[ids])


def test_extreme_scales_and_quants():
    """Largest scale, all-ones and all-zero quants, negative zero: still bit-identical."""
    rng = np.random.default_rng(7)
    for qtype in K_SCALE_OFFSETS:
        raw = quantized(qtype, (4, 256), rng)
        raw[0] = 0xFF
        raw[1] = 0
        for offset in K_SCALE_OFFSETS[qtype]:
            raw[0, offset:offset + 2] = np.array([65504.0], dtype=np.float16).view(np.uint8)
            raw[1, offset:offset + 2] = np.array([-0.0], dtype=np.float16).view(np.uint8)
        _assert_identical(dequantize(torch.from_numpy(raw), qtype), _reference(raw, qtype))


def test_shape_and_dtype_options():
    raw = quantized(Q.Q4_K, (4, 512), np.random.default_rng(1))
    ref = _reference(raw, Q.Q4_K)
    raw_t = torch.from_numpy(raw)
    _assert_identical(dequantize(raw_t.reshape(-1), Q.Q4_K, (4, 512)), ref)
    assert torch.equal(dequantize(raw_t, Q.Q4_K, dtype=torch.bfloat16), ref.to(torch.bfloat16))
    bf16 = torch.from_numpy(quantized(Q.BF16, (3, 64), np.random.default_rng(2)))
    assert dequantize(bf16, Q.BF16, dtype=torch.bfloat16).data_ptr() == bf16.data_ptr()  # no copy
    with pytest.raises(ValueError, match="does not hold"):
        dequantize(raw_t, Q.Q4_K, (4, 256))
    with pytest.raises(ValueError, match="not whole Q4_K blocks"):
        dequantize(raw_t[:, :100], Q.Q4_K)
    with pytest.raises(ValueError, match="expected uint8"):
        dequantize(raw_t.float(), Q.Q4_K)


def test_unsupported_type_names_the_tensor_and_the_type(tmp_path):
    raw = torch.zeros(2, 84, dtype=torch.uint8)  # one Q2_K block per row
    with pytest.raises(GGUFError, match="blk.3.ffn_up.weight has type Q2_K, which the PyTorch engine cannot"):
        dequantize(raw, Q.Q2_K, name="blk.3.ffn_up.weight")

    path = tmp_path / "q2k.gguf"
    write_sample(path, tensors={"output_norm.weight": (Q.F32, (32,)), "blk.0.ffn_up.weight": (Q.Q4_K, (2, 256))})
    data = bytearray(path.read_bytes())
    type_pos = data.index(b"blk.0.ffn_up.weight") + len("blk.0.ffn_up.weight") + 4 + 2 * 8
    data[type_pos:type_pos + 4] = int(Q.Q2_K).to_bytes(4, "little")  # same block size as Q4_K
    path.write_bytes(bytes(data[:-(144 - 84) * 2]))  # Q2_K blocks are smaller
    with open_gguf(path) as gguf:
        message = f"{path}: tensor 'blk.0.ffn_up.weight' has type Q2_K"
        with pytest.raises(GGUFError, match=message):
            check_supported(gguf)
        with pytest.raises(GGUFError, match=message):
            load_tensor(gguf, "blk.0.ffn_up.weight")
        check_supported(gguf, ["output_norm.weight"])


def test_tensors_of_a_file(tmp_path):
    path = write_sample(tmp_path / "model.gguf")
    with open_gguf(path) as gguf:
        check_supported(gguf)
        for name, (qtype, shape) in SAMPLE_TENSORS.items():
            rows = tensor_bytes(gguf, name)
            assert rows.dtype == torch.uint8 and rows.data_ptr() == gguf.raw(name).ctypes.data  # zero-copy
            assert tuple(rows.shape) == gguf.info(name).byte_shape
            ref = _reference(gguf.raw(name).reshape(rows.shape), qtype).reshape(shape)
            _assert_identical(load_tensor(gguf, name), ref)
            assert torch.equal(load_tensor(gguf, name, "cpu", torch.float16), ref.half())
        experts = tensor_bytes(gguf, "blk.0.ffn_gate_up_exps.weight", device="cpu")
        ref = load_tensor(gguf, "blk.0.ffn_gate_up_exps.weight")
        assert torch.equal(dequantize(experts[[3, 0]], Q.Q4_K), ref[[3, 0]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda():
    for qtype in ALL_TYPES:
        raw = quantized(qtype, (8, 512), np.random.default_rng(int(qtype)))
        ours = dequantize(torch.from_numpy(raw).cuda(), qtype)
        assert ours.device.type == "cuda"
        assert torch.equal(ours.cpu(), _reference(raw, qtype)), qtype.name
