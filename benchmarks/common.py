"""What the benchmarks share: the ViT-B ADDP they time, the machine they ran
on (CPU flags included) and the GEMM peak it reaches, measured in the run."""
import os
import platform
import time


def build_addp_b(device, frozen_precision='autocast', dropout=False):
    """ADDP-B at the released sizes (ViT-B/16 encoder, 8-block decoder, MAGE
    ViT-B predictor, VQGAN tokenizer) with random weights, seed 0."""
    import torch

    import mmaddp  # noqa: F401
    from mmaddp.registry import MODELS
    drop = 0.1 if dropout else 0.0
    torch.manual_seed(0)
    model = MODELS.build(
        dict(
            type='ADDP',
            backbone=dict(
                type='ADDPViT',
                arch='b',
                img_size=256,
                patch_size=16,
                out_type='raw',
                pre_norm=True,
                drop_rate=drop,
                attn_drop_rate=drop),
            neck=dict(
                type='TokenDecoder',
                in_channels=768,
                embed_dims=768,
                depth=8,
                num_heads=16,
                mlp_ratio=4.0,
                num_tokens=256,
                vocab_size=2025,
                drop_rate=drop),
            head=dict(type='DenoisingHead', label_smoothing=0.1),
            tokenizer=dict(type='VQTokenizer'),
            token_predictor=dict(type='TokenPredictor', arch='b', drop_rate=drop),
            frozen_precision=frozen_precision))
    model.init_weights()
    return model.to(device)


#: suffixes of the host-memory variants (CPU only): freed memory kept for
#: reuse, tcmalloc preloaded
HOST_SUFFIXES = ('_keep', '_tcmalloc')


def base_variant(variant: str) -> str:
    """The compute variant without its host-memory suffix (``'bf16_keep'`` ->
    ``'bf16'``)."""
    for suffix in HOST_SUFFIXES:
        if variant.endswith(suffix):
            return variant[:-len(suffix)]
    return variant


def find_tcmalloc():
    """The system's tcmalloc as ``LD_PRELOAD`` takes it (a soname the dynamic
    linker finds), or None."""
    import ctypes.util
    return ctypes.util.find_library('tcmalloc_minimal') or ctypes.util.find_library('tcmalloc')


def variant_env(variant: str, device: str, bf16: bool, tcmalloc):
    """The environment a variant's process runs in, or None to skip it.

    ``bf16*`` variants need bf16 arithmetic; ``*_keep`` (host memory kept
    for reuse) and ``*_tcmalloc`` (``tcmalloc``: from :func:`find_tcmalloc`)
    are CPU questions. Every other variant gets glibc's allocator defaults
    (``MMADDP_CPU_ALLOCATOR=default``)."""
    host = base_variant(variant) != variant
    if (variant.startswith('bf16') and not bf16) or (host and device != 'cpu'):
        return None
    env = dict(os.environ, MMADDP_CPU_ALLOCATOR='keep' if variant.endswith('_keep') else 'default')
    if variant.endswith('_tcmalloc'):
        if tcmalloc is None:
            return None
        env['LD_PRELOAD'] = tcmalloc
    return env


def keep_memory_if_asked(variant: str) -> None:
    """In a variant's own process: keep freed host memory for a ``*_keep``
    variant, or stop where that cannot be done (its row would be mislabelled)."""
    from mmaddp.utils import keep_freed_host_memory
    if variant.endswith('_keep') and keep_freed_host_memory() is None:
        raise RuntimeError('host memory could not be kept for reuse here (no glibc?)')


def has_fast_bf16(device) -> bool:
    """bf16 arithmetic in hardware: the CPU's flags, or the GPU's support."""
    import torch
    if device == 'cuda':
        return torch.cuda.is_bf16_supported()
    from mmaddp.engine.optimizers import cpu_has_fast_bf16
    return cpu_has_fast_bf16()


def machine(device) -> str:
    """The device, torch version and, on CPU, the flags that decide kernels."""
    import torch
    if device == 'cuda':
        return f'{torch.cuda.get_device_name(0)}, torch {torch.__version__}'
    from mmaddp.engine.optimizers import cpu_flags
    cpu = platform.processor() or 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name'))
    except (OSError, StopIteration):
        pass
    wanted = ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16', 'amx_tile', 'avx512_vnni',
              'avx512_fp16', 'amx_fp16')
    flags = [f for f in wanted if f in cpu_flags()]
    text = ' '.join(flags) if flags else 'none of ' + ' '.join(wanted)
    return (f'{cpu}, {os.cpu_count()} cores, torch {torch.__version__} '
            f'({torch.get_num_threads()} threads); CPU flags: {text}')


def gemm_peak(device, size=2048, repeats=5) -> dict:
    """GFLOP/s of a size x size matrix product in fp32 and, where the device
    has bf16 arithmetic, bf16 (best of ``repeats``; emulated bf16 runs at ~1
    GFLOP/s and is reported as None)."""
    import torch
    out = dict(bf16=None)
    kinds = [('fp32', torch.float32)
             ] + ([('bf16', torch.bfloat16)] if has_fast_bf16(device) else [])
    for name, dtype in kinds:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        best = float('inf')
        for _ in range(repeats + 1):
            if device == 'cuda':
                torch.cuda.synchronize()
            start = time.perf_counter()
            a @ b
            if device == 'cuda':
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        out[name] = 2 * size**3 / best / 1e9
    return out


def median_seconds(step, steps: int) -> float:
    """Median wall time of ``steps`` calls of ``step()`` (run the warm-up
    before)."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def append_results(path: str, title: str, lines) -> None:
    """Append a run's section (``lines``) to the results file ``path``,
    starting a new file with the heading ``title``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    new = not os.path.exists(path)
    with open(path, 'a') as f:
        if new:
            f.write(f'# {title}\n')
        f.write('\n'.join(lines) + '\n')
