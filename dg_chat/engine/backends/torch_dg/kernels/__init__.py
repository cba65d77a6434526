"""Triton kernels of the fast CUDA path: they read GGUF blocks as stored (never a dequantised
copy of a weight) and fuse the glue of a decode step into few launches (gpu-engine.md §6).

On the CPU they run under Triton's interpreter (`TRITON_INTERPRET=1`), which is how the tests
check them against the reference path.
"""
