"""Keep freed host memory for reuse: the CPU runs' memory allocator setting.

PyTorch has no caching allocator for CPU tensors: each one is a ``malloc``
and each free a ``free``. glibc serves blocks above its mmap threshold
(dynamic, at most 32 MiB) with a fresh ``mmap`` and returns them with
``munmap``, so every large activation (a 256 px VQGAN feature map of a batch
of 8 is 134 MB in bf16) is written into pages the kernel must fault in and
zero first. On 2 cores of an Intel Xeon (``amx_bf16``) that doubled the cost
of the VQGAN's SiLU and GroupNorm (60 ms instead of 30 ms for that map) and
made a bf16 20-step generation of 8 images 1.7x slower (80 s against 47 s
at ViT-B size, ``benchmarks/results/generate.md``).

The fix Intel recommends for PyTorch on CPU is a different allocator
(tcmalloc or jemalloc through ``LD_PRELOAD``, as
``python -m torch.backends.xeon.run_cpu`` does); that needs a library the
system may not have and a setting made before the process starts. glibc
itself can be told to stop using mmap and to keep freed memory at the top of
its heap (``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, ...)``),
which gets most of the gain in the running process: that is all this module
does, written here because neither PyTorch nor MMEngine sets it. The cost:
the process keeps its peak heap instead of returning freed memory to the
system (the benchmarks' peak RSS columns show it), and a freed block serves
later requests that fit in it: glibc may grow the heap for a request a few
bytes larger (PyTorch's 64-byte-aligned requests are), so some new pages
are still faulted in.
"""
import ctypes
import os
import platform
from typing import Optional

#: glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: the largest trim threshold mallopt takes (a C int): 2 GiB - 1
TRIM_THRESHOLD = 2**31 - 1
#: environment variable that turns the setting off (``MMADDP_CPU_ALLOCATOR=default``)
ENV = 'MMADDP_CPU_ALLOCATOR'
#: allocators that replace glibc's when preloaded; mallopt means nothing to them
PRELOADED_ALLOCATORS = ('tcmalloc', 'jemalloc', 'mimalloc')

_applied: Optional[str] = None


def keep_freed_host_memory() -> Optional[str]:
    """Make glibc keep freed memory for reuse instead of unmapping it.

    Does nothing (returns None) where the C library is not glibc, where
    ``LD_PRELOAD`` names another allocator, or where ``MMADDP_CPU_ALLOCATOR``
    is ``default``. Calling it again is free.

    Returns:
        str | None: one line saying what was set, or None when nothing was.

    Raises:
        ValueError: ``MMADDP_CPU_ALLOCATOR`` is set to something other than
            ``default`` or ``keep``.
    """
    global _applied
    choice = os.environ.get(ENV, 'keep')
    if choice not in ('keep', 'default'):
        raise ValueError(f"{ENV} must be 'keep' or 'default', got {choice!r}")
    if choice == 'default':
        return None
    if _applied is not None:
        return _applied
    preload = os.environ.get('LD_PRELOAD', '')
    if any(name in preload for name in PRELOADED_ALLOCATORS):
        return None
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return None
    mallopt = getattr(ctypes.CDLL(None), 'mallopt', None)
    if mallopt is None:
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    if not (mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return None
    _applied = ('host memory: glibc keeps freed blocks for reuse (no mmap per large tensor; '
                f'{ENV}=default turns this off)')
    return _applied


def prepare_cpu_memory() -> None:
    """For the tools: on a machine without CUDA, :func:`keep_freed_host_memory`
    and print what it set (GPU runs keep glibc's defaults)."""
    import torch
    if torch.cuda.is_available():
        return
    note = keep_freed_host_memory()
    if note:
        print(note, flush=True)
