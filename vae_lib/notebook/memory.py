"""Memory of a long JAX session: handing back what compiled programs hold."""

from __future__ import annotations

import ctypes
import gc

import jax

__all__ = ["release_memory"]


def release_memory() -> None:
    """Free the memory held by compiled programs: clear JAX's caches, return it to the OS.

    Every compiled program (each jitted function, and each operation run eagerly, per
    shape) stays cached, and the memory freed when the caches are cleared stays with the
    process unless the C allocator hands it back. In a long notebook session that grows
    the process by hundreds of megabytes. Call this between stages, not inside a loop:
    anything used again afterwards is compiled again.
    """
    jax.clear_caches()
    gc.collect()
    try:  # glibc (Linux) keeps freed memory unless asked; other C libraries lack this call
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
