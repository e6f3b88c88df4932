"""Triton kernels for the KV presses; loaded lazily by ``promptshrink.kv.dispatch`` (CUDA only)."""
