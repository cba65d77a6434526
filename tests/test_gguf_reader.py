"""dg_chat.gguf.reader: agrees with gguf.GGUFReader on valid files, and turns every kind of
corruption into one GGUFError line naming the file (also through `dg-chat models info`)."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from dg_chat.gguf.reader import GGUFError, open_gguf
from tests.support.gguf_samples import write_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(tmp_path_factory.mktemp("gguf") / "sample.gguf")


def _plain(value: object) -> object:
    return value.tolist() if isinstance(value, np.ndarray) else value


def test_metadata_matches_gguf_reader(sample):
    ref = gguf.GGUFReader(sample)
    with open_gguf(sample) as ours:
        assert ours.version == ref.fields["GGUF.version"].contents()
        assert len(ours.metadata) == ref.fields["GGUF.kv_count"].contents()
        ref_keys = [key for key in ref.fields if not key.startswith("GGUF.")]
        assert list(ours.metadata) == ref_keys
        for key in ref_keys:
            if key.endswith(".test.nested"):
                continue  # GGUFReader flattens nested arrays; checked below
            assert _plain(ours.metadata[key]) == ref.fields[key].contents(), key
        assert [a.tolist() for a in ours.get("diffusion-gemma.test.nested")] == [[1, 2], [3]]
        # spot checks of the value types, independent of GGUFReader
        assert ours.get("diffusion.canvas_length") == 8
        assert ours.arch_get("attention.sliding_window_pattern").tolist() == [True, False, True]
        assert ours.get("test.u64") == 2**63 + 5 and ours.get("test.f64") == 1e-300
        assert ours.get("test.string") == "héllo wörld" and ours.get("test.bool") is True
        assert ours.architecture == "diffusion-gemma"


def test_tensors_match_gguf_reader(sample):
    ref = gguf.GGUFReader(sample)
    with open_gguf(sample) as ours:
        assert list(ours.tensors) == [t.name for t in ref.tensors]
        for t in ref.tensors:
            info = ours.tensors[t.name]
            assert info.type == t.tensor_type
            assert info.shape == tuple(int(n) for n in reversed(t.shape))
            assert (info.offset, info.n_bytes, info.n_elements) == (t.data_offset, t.n_bytes, t.n_elements)
            assert ours.raw(t.name).tobytes() == t.data.tobytes()
            assert ours.array(t.name).tobytes() == t.data.tobytes()
        assert ours.array("blk.0.attn_q.weight").dtype == np.float16
        assert ours.array("blk.0.ffn_gate_up_exps.weight").shape == (4, 8, 144)  # Q4_K rows of bytes
        assert ours.array("blk.0.attn_k.weight").shape == (16, 128)  # BF16: numpy has no bfloat16


def test_missing_tensor_and_metadata(sample):
    with open_gguf(sample) as ours:
        with pytest.raises(GGUFError, match="tensor 'nope' is missing"):
            ours.raw("nope")
        assert ours.get("nope", 3) == 3


# -- corruptions ----------------------------------------------------------------------

def _value_pos(data: bytearray, key: str) -> int:
    """Byte position of the u32 value type that follows metadata `key`."""
    return data.index(struct.pack("<Q", len(key)) + key.encode()) + 8 + len(key)


def _tensor_pos(data: bytearray, name: str) -> tuple[int, int, int]:
    """Byte positions of tensor `name`'s n_dims, type and offset fields in the header."""
    dims = data.index(struct.pack("<Q", len(name)) + name.encode()) + 8 + len(name)
    (n_dims,) = struct.unpack_from("<I", data, dims)
    return dims, dims + 4 + 8 * n_dims, dims + 8 + 8 * n_dims


def _put(data: bytearray, pos: int, fmt: str, value: object) -> None:
    struct.pack_into("<" + fmt, data, pos, value)


def _rename(data: bytearray, old: str, new: str) -> None:
    assert len(old) == len(new)
    pos = data.index(struct.pack("<Q", len(old)) + old.encode())
    data[pos + 8:pos + 8 + len(old)] = new.encode()


def _patch_offset(name: str, delta: int = 0, to: str | None = None) -> Callable[[bytearray], None]:
    def patch(data: bytearray) -> None:
        pos = _tensor_pos(data, name)[2]
        target = struct.unpack_from("<Q", data, _tensor_pos(data, to)[2])[0] if to else None
        _put(data, pos, "Q", target if to else struct.unpack_from("<Q", data, pos)[0] + delta)
    return patch


def _handmade(n_tensors: int, n_kv: int, body: bytes) -> bytearray:
    """A GGUF v3 file written byte by byte, for what GGUFWriter refuses to write."""
    return bytearray(b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + body)


def _gguf_string(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


# name -> (patch of the valid file's bytes (or a replacement of them), expected message part)
CORRUPTIONS: dict[str, tuple[Callable[[bytearray], bytearray | None], str]] = {
    "bad magic": (lambda d: d.__setitem__(slice(0, 4), b"GGML"), "not a GGUF file"),
    "old version": (lambda d: _put(d, 4, "I", 1), "unsupported GGUF version 1"),
    "big-endian": (lambda d: _put(d, 4, "I", 3 << 24), "big-endian"),
    "truncated header": (lambda d: d[:1000], "truncated file: metadata"),
    "truncated in counts": (lambda d: d[:12], "truncated file"),
    "truncated tensor data": (lambda d: d[:-64], "truncated file: tensor 'blk.0.ffn_down_exps.weight'"),
    "absurd kv count": (lambda d: _put(d, 16, "Q", 2**63 - 1), "cannot fit in"),
    "absurd tensor count": (lambda d: _put(d, 8, "Q", 2**63 + 1), "cannot fit in"),
    "misaligned offset": (_patch_offset("blk.0.attn_v.weight", delta=1), "not aligned"),
    "offset beyond the end": (_patch_offset("blk.0.attn_v.weight", delta=2**40),
                              "truncated file: tensor 'blk.0.attn_v.weight'"),
    "unknown tensor type": (lambda d: _put(d, _tensor_pos(d, "blk.0.attn_q.weight")[1], "I", 99), "unknown type 99"),
    "unknown value type": (lambda d: _put(d, _value_pos(d, "test.u16"), "I", 99), "unknown value type 99"),
    "unknown array element type": (lambda d: _put(d, _value_pos(d, "tokenizer.ggml.scores") + 4, "I", 77),
                                   "unknown array element type 77"),
    "duplicate key": (lambda d: _rename(d, "diffusion.eb_t_max", "diffusion.eb_t_min"),
                      "duplicate metadata key 'diffusion.eb_t_min'"),
    "duplicate tensor": (lambda d: _rename(d, "blk.0.attn_v.weight", "blk.0.attn_k.weight"),
                         "duplicate tensor 'blk.0.attn_k.weight'"),
    "overlapping tensors": (_patch_offset("blk.0.attn_v.weight", to="blk.0.attn_k.weight"), "overlap"),
    "absurd string length": (lambda d: _put(d, _value_pos(d, "general.name") + 4, "Q", 2**62),
                             "corrupt file: metadata 'general.name' would need 4,611,686,018,427,387,904 bytes"),
    "absurd length in a string array": (
        lambda d: _put(d, _value_pos(d, "tokenizer.ggml.tokens") + 16, "Q", 2**40),  # the first token's length
        "corrupt file: metadata 'tokenizer.ggml.tokens' would need 1,099,511,627,776 bytes"),
    "absurd array count": (lambda d: _put(d, _value_pos(d, "tokenizer.ggml.tokens") + 8, "Q", 2**61),
                           "corrupt file: metadata 'tokenizer.ggml.tokens' would need"),
    "too many dimensions": (lambda d: _put(d, _tensor_pos(d, "output_norm.weight")[0], "I", 9), "9 dimensions"),
    "row not whole blocks": (lambda d: _put(d, _tensor_pos(d, "token_embd.weight")[0] + 4, "Q", 33), "not a multiple"),
    "empty file": (lambda d: bytearray(), "empty"),
    "arrays nested too deep": (lambda d: _handmade(0, 1, _gguf_string("deep") + struct.pack("<I", 9)
                                                   + struct.pack("<IQ", 9, 1) * 100 + struct.pack("<IQ", 4, 0)),
                               "nested more than 8 deep"),
    "absurd count of nested arrays": (lambda d: _handmade(0, 1, _gguf_string("nested") + struct.pack("<I", 9)
                                                          + struct.pack("<IQ", 9, 2**40) + bytes(4096)),
                                      "an array of 1,099,511,627,776 arrays (dg-chat reads at most 65,536)"),
    "lying count of nested arrays": (lambda d: _handmade(0, 1, _gguf_string("nested") + struct.pack("<I", 9)
                                                         + struct.pack("<IQ", 9, 60_000) + bytes(4096)),
                                     "corrupt file: metadata 'nested' would need 720,000 bytes"),
    "quantized scalar": (lambda d: _handmade(1, 0, _gguf_string("s") + struct.pack("<IIQ", 0, Q.Q8_0, 0)
                                             + bytes(64)), "row of 1 is not a multiple of the Q8_0 block size"),
}


@pytest.fixture(scope="module")
def corrupt_files(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("corrupt")
    files = {"missing file": folder / "missing.gguf", "directory": folder}
    for name, (patch, _) in CORRUPTIONS.items():
        data = bytearray(sample.read_bytes())
        result = patch(data)
        files[name] = folder / f"{name.replace(' ', '-')}.gguf"
        files[name].write_bytes(result if result is not None else data)
    return files


EXPECTED = {name: message for name, (_, message) in CORRUPTIONS.items()} | {
    "missing file": "no such file", "directory": "is a directory"}


@pytest.mark.parametrize("case", list(EXPECTED))
def test_corruption_is_one_line_gguf_error(case, corrupt_files):
    path = corrupt_files[case]
    with pytest.raises(GGUFError) as caught:
        open_gguf(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert EXPECTED[case] in message


def test_models_info_on_corrupt_files_is_one_line_and_exit_1(corrupt_files):
    runs = {case: subprocess.Popen([sys.executable, "-m", "dg_chat.cli", "models", "info", str(path)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for case, path in corrupt_files.items()}  # all at once: each one is mostly Python start-up
    for case, run in runs.items():
        out, err = run.communicate(timeout=120)
        assert run.returncode == 1, (case, err)
        assert err.count("\n") == 1 and err.startswith("dg-chat: error: "), (case, err)
        assert str(corrupt_files[case]) in err and out == "", case


def test_real_gemma4_vocab(gemma4_vocab):
    with open_gguf(gemma4_vocab) as vocab:
        assert vocab.architecture == "gemma4"
        assert vocab.tensors == {}
        tokens = vocab.get("tokenizer.ggml.tokens")
        assert len(tokens) == 262_144 and tokens[:5] == ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
        assert len(vocab.get("tokenizer.ggml.merges")) == 514_906
        assert len(vocab.get("tokenizer.ggml.scores")) == len(vocab.get("tokenizer.ggml.token_type")) == 262_144
        assert vocab.get("tokenizer.ggml.mask_token_id") == 4
        assert vocab.arch_get("expert_count") == 128
