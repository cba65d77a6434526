"""Device math shared by the GEMM and MoE kernels: tanh, the tanh-approximated GELU and the
fp32-accumulating dot. None calls libdevice, so each runs alike under the interpreter and on CUDA.
"""

from __future__ import annotations

from dg_chat.engine.backends.torch_dg.kernels.runtime import tl, triton


@triton.jit
def tanh(x):
    """tanh in fp32 (tl has none, and libdevice's returns None under the interpreter): an odd
    Taylor series below 0.125, where (1 - e)/(1 + e) would lose bits to cancellation."""
    a = tl.abs(x)
    e = tl.exp(-2.0 * a)
    far = (1.0 - e) / (1.0 + e)
    x2 = x * x
    near = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0))))
    return tl.where(a < 0.125, near, tl.where(x < 0, -far, far))


@triton.jit
def gelu_tanh(x):
    """F.gelu(x, approximate="tanh") = 0.5·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³), written
    as x·σ(2u): the same function, without a tanh and without cancellation for u ≪ 0. σ takes
    exp(-|z|) only, which never overflows."""
    z = 1.5957691216057308 * (x + 0.044715 * x * x * x)  # 2u
    e = tl.exp(-tl.abs(z))
    return x * tl.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def mma(acc, a, b, UPCAST: tl.constexpr):
    """acc + a @ b (a @ b when acc is None) with fp32 accumulation, 2-D or batched 3-D; a and b
    have the same float dtype. fp32 products stay IEEE (not TF32). UPCAST (the interpreter, whose
    bf16 dot multiplies bit patterns, gpu-engine.md §7.1) multiplies the same values in fp32, so
    there b may already be fp32."""
    if a.dtype == tl.float32:
        return tl.dot(a, b, acc, input_precision="ieee")
    elif UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc, out_dtype=tl.float32)
