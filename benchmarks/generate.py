"""Images per second of ADDP-B unconditional generation (256 px, cosine
steps): fp32 and bf16 side by side with a straightforward variant that stands
in for the authors' release.

    python benchmarks/generate.py [--device cpu|cuda] [--batch-size N] [--steps N]
                                  [--repeats N] [--warmup N]

* ``release``: the same sampler (so the same random draws for a seed) around
  a plain model step: attention written out by hand (q k^T / sqrt(d),
  softmax, @ v) in every block, fp32, the start image recomputed (token
  predictor + VQGAN decode) on every call.
* ``fp32``: ``ADDP.generate`` as shipped (SDPA where faster, the start image
  cached), fp32.
* ``fp32_frozen``: the same with ``frozen_precision='fp32'`` (the VQGAN
  channels-last).
* ``bf16``: ``ADDP.generate(bf16=True)`` with ``frozen_precision='bf16'``
  (frozen parts in bf16, the VQGAN channels-last, nearest-code search fp32).
  Skipped where the device has no bf16 arithmetic.
* ``fp32_keep``, ``bf16_keep``: ``fp32`` / ``bf16`` with host memory kept
  for reuse (:func:`mmaddp.utils.keep_freed_host_memory`, what
  ``tools/generate.py`` sets on a machine without CUDA); the other rows run
  with glibc's defaults, as every run did before. CPU only.
* ``bf16_tcmalloc``: ``bf16`` with tcmalloc preloaded, for reference, where
  the system has it (CPU only; the tools do not do this).

``--variants`` picks a subset (default: all but ``fp32_frozen``).

Weights are random at the released sizes. Each variant runs in its own
process; all sample with the same seed, and the parent compares their token
ids with the release stand-in's. Results are appended to
``benchmarks/results/generate.md``.
"""
import argparse
import json
import os
import os.path as osp
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, osp.dirname(HERE))
sys.path.insert(0, HERE)

from common import (append_results, base_variant, build_addp_b, find_tcmalloc, gemm_peak,
                    has_fast_bf16, keep_memory_if_asked, machine, variant_env)

SEED = 0
VARIANTS = ('release', 'fp32', 'fp32_frozen', 'bf16', 'fp32_keep', 'bf16_keep', 'bf16_tcmalloc')
DEFAULT_VARIANTS = tuple(v for v in VARIANTS if v != 'fp32_frozen')
#: frozen_precision of each compute variant (default: as shipped, 'autocast')
FROZEN = dict(fp32_frozen='fp32', bf16='bf16')


def straightforward_generate(model, num_samples, steps, seed):
    """The same sampler (:func:`mmaddp.models.diffusion.sample_ids`, so the
    same random draws for the same seed) around a plain model step: the start
    image recomputed on every call, fp32 throughout, no autocast."""
    import torch

    from mmaddp.models.diffusion import (eval_mode, fully_masked_pixels, make_generators,
                                         mix_code_vectors, sample_ids)
    device = model.pixel_mean.device
    tok, pred = model.tokenizer, model.token_predictor
    length, codes = model.neck.num_tokens, model.num_codes
    side = int(round(length**0.5))
    state = dict(
        pixels=fully_masked_pixels(tok, pred, length, device).expand(num_samples, -1, -1, -1))

    def predict(ids, masked):
        return model.decode_logits(state['pixels'], ids, masked)[..., :codes].softmax(-1)

    def decode(ids, masked, probs):
        vectors = tok.embed(ids.view(num_samples, side, side))
        if masked.any():
            vectors = mix_code_vectors(tok, vectors, masked, probs)
        state['pixels'] = tok.decode(vectors).clamp(0, 1)

    with torch.no_grad(), eval_mode(model):
        ids = sample_ids(
            predict,
            num_samples,
            length,
            steps,
            make_generators(num_samples, device, seed),
            device,
            on_step=decode)
    return state['pixels'], ids


def run_variant(variant, device, batch, steps, repeats, warmup, dump):
    import torch
    model = build_addp_b(device, FROZEN.get(base_variant(variant), 'autocast')).eval()
    if variant == 'release':

        def sample():
            return straightforward_generate(model, batch, steps, SEED)
    else:

        def sample():
            images, trace = model.generate(
                batch, steps=steps, seed=SEED, return_trace=True, bf16=variant.startswith('bf16'))
            return images, trace[-1]['ids']

    def sync():
        if device == 'cuda':
            torch.cuda.synchronize()

    first = None
    for _ in range(warmup):
        out = sample()
        first = first or out
    sync()
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = sample()
        sync()
        times.append(time.perf_counter() - start)
        first = first or out
    torch.save(dict(images=first[0].float().cpu(), ids=first[1].cpu()), dump)
    peak = (
        torch.cuda.max_memory_allocated() /
        2**30 if device == 'cuda' else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    per_batch = sum(times) / len(times)
    return dict(
        variant=variant,
        device=device,
        batch=batch,
        steps=steps,
        repeats=repeats,
        warmup=warmup,
        s_per_batch=per_batch,
        s_min=min(times),
        images_per_s=batch / per_batch,
        peak_gib=peak)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default=None, help='cpu or cuda (default: cuda if present)')
    parser.add_argument(
        '--batch-size',
        type=int,
        default=None,
        help='samples per generate call (default: 2 on CPU, 64 on CUDA)')
    parser.add_argument('--steps', type=int, default=20, help='sampling steps (default: 20)')
    parser.add_argument(
        '--repeats', type=int, default=None, help='timed calls (default: 1 on CPU, 5 on CUDA)')
    parser.add_argument(
        '--warmup',
        type=int,
        default=None,
        help='untimed calls first (default: 1 on CPU, 2 on CUDA; 0 allowed)')
    parser.add_argument(
        '--variants',
        nargs='+',
        choices=VARIANTS,
        default=list(DEFAULT_VARIANTS),
        help='variants to run (release first: the others are compared with it)')
    parser.add_argument('--variant', help=argparse.SUPPRESS)
    parser.add_argument('--dump', help=argparse.SUPPRESS)
    parser.add_argument('--out', default=osp.join(HERE, 'results', 'generate.md'))
    args = parser.parse_args()
    import torch
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    batch = args.batch_size or (64 if device == 'cuda' else 2)
    repeats = args.repeats or (5 if device == 'cuda' else 1)
    warmup = args.warmup if args.warmup is not None else (2 if device == 'cuda' else 1)
    if args.variant:  # child process: one variant, JSON on the last line
        from mmaddp.models.layers import explicit_attention
        keep_memory_if_asked(args.variant)
        plain = explicit_attention() if args.variant == 'release' else nullcontext()
        with plain:  # written-out attention in every block: the release's way
            result = run_variant(args.variant, device, batch, args.steps, repeats, warmup,
                                 args.dump)
        print(json.dumps(result))
        return
    bf16 = has_fast_bf16(device)
    peak = gemm_peak(device)
    rows, dumps = [], {}
    tmp = tempfile.mkdtemp(prefix='addp_generate_')
    if 'release' not in args.variants:
        parser.error('--variants must include release (the others are compared with it)')
    tcmalloc = find_tcmalloc()
    for variant in sorted(args.variants, key=VARIANTS.index):
        env = variant_env(variant, device, bf16, tcmalloc)
        if env is None:
            continue
        dumps[variant] = osp.join(tmp, variant + '.pt')
        cmd = [
            sys.executable, __file__, '--device', device, '--batch-size',
            str(batch), '--steps',
            str(args.steps), '--repeats',
            str(repeats), '--warmup',
            str(warmup), '--variant', variant, '--dump', dumps[variant]
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    dumped = {v: torch.load(path) for v, path in dumps.items()}
    shutil.rmtree(tmp, ignore_errors=True)
    base = rows[0]
    bf16_peak = ('not measured (no bf16 arithmetic)'
                 if peak['bf16'] is None else f"{peak['bf16']:.0f} GFLOP/s")
    mem = 'peak GPU memory (GiB)' if device == 'cuda' else 'peak RSS (GiB)'
    flags = f'--device {device} --batch-size {batch} --steps {args.steps} --repeats {repeats} ' \
            f'--warmup {warmup}'
    lines = [
        f'\n## {device.upper()}: {machine(device)}\n',
        f'ADDP-B unconditional generation at 256 px ({args.steps} cosine steps, MAGE-B '
        f'predictor and VQGAN at released sizes, random weights), batch {batch}, {repeats} timed '
        f'call(s) after {warmup} warm-up; load average before the run '
        f'{os.getloadavg()[0]:.2f}. GEMM peak in the same run (2048^2): fp32 '
        f'{peak["fp32"]:.0f} GFLOP/s, bf16 {bf16_peak}.\n',
        f'Command: `python benchmarks/generate.py {flags}`\n',
        f'| variant | images/s | s per batch (mean / min) | s per step | vs release '
        f'| vs mmaddp fp32 | {mem} | final ids equal to the release stand-in\'s |',
        '|---|---|---|---|---|---|---|---|',
    ]
    ref = dumped['release']['ids']
    by = {r['variant']: r for r in rows}

    def vs_fp32(r):
        fp32 = by.get('fp32')
        return '-' if fp32 is None else f"{r['images_per_s'] / fp32['images_per_s']:.2f}x"

    for r in rows:
        same = int((dumped[r['variant']]['ids'] == ref).sum())
        lines.append(f"| {r['variant']} | {r['images_per_s']:.3f} | {r['s_per_batch']:.1f} / "
                     f"{r['s_min']:.1f} | {r['s_per_batch'] / r['steps']:.2f} | "
                     f"{r['images_per_s'] / base['images_per_s']:.2f}x | {vs_fp32(r)} | "
                     f"{r['peak_gib']:.2f} | "
                     f"{same} / {ref.numel()} |")
    if not bf16:
        lines.append('\nbf16 row skipped: the device reports no bf16 arithmetic.')
    append_results(args.out, 'ADDP unconditional generation: throughput and peak memory', lines)
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
