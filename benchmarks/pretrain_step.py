"""Throughput and peak memory of one ADDP-B pretraining step (forward +
backward + AdamW) at 256 px: fp32 and bf16 side by side with a
straightforward variant that stands in for the authors' release.

    python benchmarks/pretrain_step.py [--device cpu|cuda] [--batch N] [--steps N]

Variants (the same random weights, images and masks):

* ``release``: two separate token-predictor passes, attention written out by
  hand (q k^T, softmax, @ v) in every block, fp32, no autocast.
* ``fp32``: mmaddp's ADDP (both predictor passes in one batched forward,
  attention by SDPA where it is faster), fp32.
* ``fp32_frozen``: also ``frozen_precision='fp32'`` (the VQGAN channels-last).
* ``fp32_fused``: fp32 with torch's fused AdamW (``fused=True``, one kernel
  for all parameters instead of a dozen ops per tensor).
* ``bf16``: fused AdamW under the optimizer wrapper a config selects for
  bf16: ``CPUBf16OptimWrapper`` on CPU, ``AmpOptimWrapper(dtype='bfloat16')``
  on CUDA; everything autocast, so the VQGAN encoder too (its code ids move,
  see ``tests/test_cpu_kernels.py``). Skipped where the device has no bf16
  arithmetic.
* ``bf16_frozen``: also ``frozen_precision='bf16'`` (the token predictor and
  the VQGAN decoder held in bf16, channels-last; the VQGAN encoder fp32
  channels-last and the nearest-code search fp32, so the code ids are the
  fp32 path's).
* ``bf16_all``: ``frozen_precision='bf16_all'``: the VQGAN encoder held in
  bf16 too (the code ids move as under ``bf16``), so no frozen weight is
  cast at any step.
* ``*_keep``: the same with host memory kept for reuse
  (:func:`mmaddp.utils.keep_freed_host_memory`, what ``tools/train.py``
  sets on a machine without CUDA); the rows without it run with glibc's
  defaults, as every run did before.
* ``bf16_tcmalloc``: ``bf16`` with tcmalloc preloaded (``LD_PRELOAD``),
  for reference, where the system has the library; the tools do not do this.

Each variant runs in its own process so its peak memory is its own. The run
also measures the device's GEMM peak and, on CPU, names the flags that
decide the kernels. Results are appended to ``benchmarks/results/pretrain_step.md``.
"""
import argparse
import json
import os.path as osp
import resource
import subprocess
import sys
import time
from contextlib import nullcontext

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, osp.dirname(HERE))
sys.path.insert(0, HERE)

from common import (append_results, base_variant, build_addp_b, find_tcmalloc, gemm_peak,
                    has_fast_bf16, keep_memory_if_asked, machine, variant_env)

VARIANTS = ('release', 'fp32', 'fp32_frozen', 'fp32_fused', 'bf16', 'bf16_frozen', 'bf16_all',
            'fp32_keep', 'fp32_fused_keep', 'bf16_keep', 'bf16_frozen_keep', 'bf16_all_keep',
            'bf16_tcmalloc')
NAMES = dict(
    release='release stand-in (fp32, 2 predictor passes, attention by hand)',
    fp32='mmaddp fp32',
    fp32_frozen="mmaddp fp32, frozen_precision='fp32' (tokenizer channels-last)",
    fp32_fused='mmaddp fp32, fused AdamW',
    bf16='mmaddp bf16 autocast (VQGAN encoder too), fused AdamW',
    bf16_frozen="mmaddp bf16 autocast, frozen_precision='bf16' (exact code ids), fused AdamW",
    bf16_all="mmaddp bf16 autocast, frozen_precision='bf16_all' (VQGAN encoder bf16 too, "
    'no per-step casts of the frozen weights), fused AdamW')
NAMES.update({
    f'{v}_keep': f'{NAMES[v]}; host memory kept for reuse'
    for v in ('fp32', 'fp32_fused', 'bf16', 'bf16_frozen', 'bf16_all')
})
NAMES['bf16_tcmalloc'] = NAMES['bf16'] + '; tcmalloc preloaded (reference)'
#: variants whose AdamW is torch's fused kernel (with any host-memory suffix)
FUSED = ('fp32_fused', 'bf16', 'bf16_frozen', 'bf16_all')
FROZEN = dict(fp32_frozen='fp32', bf16_frozen='bf16', bf16_all='bf16_all')
#: FLOP of one ADDP-B step per image (torch.utils.flop_counter, issue 21)
GFLOP_PER_IMAGE = 723


def make_release_corruption(model):
    """The release's corruption: two token-predictor passes."""
    import torch

    from mmaddp.models.diffusion import mix_code_vectors

    @torch.no_grad()
    def corrupt(images, mask_t, mask_next):
        tok, pred = model.tokenizer, model.token_predictor
        ids, e0 = tok.encode(images)
        ids = ids.flatten(1)
        p_next = pred.predict_probs(ids, mask_next)
        q_t = pred.predict_probs(ids, mask_t)
        return ids, tok.decode(mix_code_vectors(tok, e0, mask_t, p_next)).clamp(0, 1), q_t

    model.corrupt = corrupt


def optim_wrapper(variant, device, params):
    import torch
    from mmengine.optim import AmpOptimWrapper, OptimWrapper

    from mmaddp.engine.optimizers import CPUBf16OptimWrapper
    opt = torch.optim.AdamW(
        params,
        lr=1e-4,
        betas=(0.9, 0.95),
        weight_decay=0.05,
        fused=base_variant(variant) in FUSED or None)
    clip = dict(max_norm=3.0)
    if not variant.startswith('bf16'):
        return OptimWrapper(opt, clip_grad=clip)
    if device == 'cuda':
        return AmpOptimWrapper(optimizer=opt, clip_grad=clip, dtype='bfloat16')
    return CPUBf16OptimWrapper(optimizer=opt, clip_grad=clip, enabled=True)


def run_variant(variant, device, batch, steps, warmup):
    import torch
    model = build_addp_b(device, FROZEN.get(base_variant(variant), 'autocast')).train()
    if variant == 'release':
        make_release_corruption(model)
    params = [p for p in model.parameters() if p.requires_grad]
    wrapper = optim_wrapper(variant, device, params)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, 256, 256, generator=gen).to(device)
    mask_t, mask_next = model.mask_schedule.masks_for(batch, 256, 20, 23, generator=gen)
    mask_t, mask_next = mask_t.to(device), mask_next.to(device)

    def step():
        with wrapper.optim_context(model):
            loss = model.denoising_loss(images, mask_t, mask_next)
        wrapper.update_params(loss)
        return float(loss)

    def sync():
        if device == 'cuda':
            torch.cuda.synchronize()

    first_loss = step()
    for _ in range(warmup - 1):
        step()
    sync()
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    peak = (
        torch.cuda.max_memory_allocated() /
        2**30 if device == 'cuda' else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    median = sorted(times)[len(times) // 2]
    return dict(
        variant=variant,
        s_per_step=median,
        images_per_s=batch / median,
        peak_gib=peak,
        first_loss=first_loss)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default=None, help='cpu or cuda (default: cuda if present)')
    parser.add_argument('--batch', type=int, default=None)
    parser.add_argument('--steps', type=int, default=None, help='timed steps (median reported)')
    parser.add_argument('--warmup', type=int, default=None)
    parser.add_argument('--variant', help=argparse.SUPPRESS)
    parser.add_argument('--out', default=osp.join(HERE, 'results', 'pretrain_step.md'))
    args = parser.parse_args()
    import torch
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    batch = args.batch or (64 if device == 'cuda' else 2)
    steps = args.steps or (10 if device == 'cuda' else 3)
    warmup = args.warmup or (3 if device == 'cuda' else 1)
    if args.variant:  # child process: one variant, JSON on the last line
        from mmaddp.models.layers import explicit_attention
        keep_memory_if_asked(args.variant)
        plain = explicit_attention() if args.variant == 'release' else nullcontext()
        with plain:
            result = run_variant(args.variant, device, batch, steps, warmup)
        print(json.dumps(result))
        return
    bf16 = has_fast_bf16(device)
    peak = gemm_peak(device)
    rows = []
    tcmalloc = find_tcmalloc()
    for variant in VARIANTS:
        env = variant_env(variant, device, bf16, tcmalloc)
        if env is None:
            continue
        cmd = [
            sys.executable, __file__, '--device', device, '--batch',
            str(batch), '--steps',
            str(steps), '--warmup',
            str(warmup), '--variant', variant
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    by = {r['variant']: r for r in rows}
    bf16_peak = ('not measured (no bf16 arithmetic)'
                 if peak['bf16'] is None else f"{peak['bf16']:.0f} GFLOP/s")
    mem = 'peak GPU memory (GiB)' if device == 'cuda' else 'peak RSS (GiB)'
    lines = [
        f'\n## {device.upper()}: {machine(device)}\n',
        f'ADDP-B step at 256 px (ViT-B/16 encoder, 8-block decoder, MAGE ViT-B predictor, '
        f'released-size VQGAN; random weights, no dropout), batch {batch}, median of {steps} '
        f'timed steps after {warmup} warm-up; `python benchmarks/pretrain_step.py --device '
        f'{device}`. GEMM peak measured in the same run (2048^2): fp32 {peak["fp32"]:.0f} '
        f'GFLOP/s, bf16 {bf16_peak}.\n',
        '| variant | s / step | images/s | vs release | vs mmaddp fp32 '
        f"| share of its precision's GEMM peak | {mem} | loss (first step) |",
        '|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        # each row against the peak of the precision its products run in
        ceiling = peak['bf16'] if r['variant'].startswith('bf16') else peak['fp32']
        share = r['images_per_s'] * GFLOP_PER_IMAGE / ceiling
        lines.append(f"| {NAMES[r['variant']]} | {r['s_per_step']:.2f} | {r['images_per_s']:.3f} | "
                     f"{r['images_per_s'] / by['release']['images_per_s']:.2f}x | "
                     f"{r['images_per_s'] / by['fp32']['images_per_s']:.2f}x | {share:.0%} | "
                     f"{r['peak_gib']:.2f} | {r['first_loss']:.4f} |")
    if not bf16:
        lines.append('\nbf16 rows skipped: the device reports no bf16 arithmetic.')
    append_results(args.out, 'ADDP pretraining step: throughput and peak memory', lines)


if __name__ == '__main__':
    main()
