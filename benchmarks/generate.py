"""Images per second of ADDP unconditional generation (ViT-B/16, 256 px,
20 cosine steps) against a straightforward variant of the same sampler.

    python benchmarks/generate.py [--device cpu|cuda] [--batch-size N] [--steps N]
                                  [--repeats N] [--warmup N]

* ``optimized``: ``ADDP.generate`` as shipped: attention by
  ``F.scaled_dot_product_attention``, the start image (decode of the fully
  masked prediction) computed once and cached, all samples in one batch, bf16
  autocast for encoder + decoder on CUDA.
* ``straightforward``: the same sampler, batched the same way, around a plain
  model step: attention written out by hand (q k^T / sqrt(d), softmax, @ v)
  in fp32 in encoder, decoder and token predictor, the start image
  recomputed (token predictor + VQGAN decode) on every call, no autocast.

Weights are random at the released sizes (VQGAN tokenizer, MAGE-B token
predictor, TokenDecoder of configs/addp/addp_vit-base-p16_64xb64-amp-1600e_in1k.py).
Each variant runs in its own process so its peak memory is its own; both
sample with the same seed, and the parent compares their token ids and images.
Results are appended to ``benchmarks/results/generate.md``.
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
SEED = 0


def build_model(device):
    import torch

    import mmaddp  # noqa: F401
    from mmaddp.registry import MODELS
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
                drop_rate=0.1,
                attn_drop_rate=0.1),
            neck=dict(
                type='TokenDecoder',
                in_channels=768,
                embed_dims=768,
                depth=8,
                num_heads=16,
                mlp_ratio=4.0,
                num_tokens=256,
                vocab_size=2025,
                drop_rate=0.1),
            head=dict(type='DenoisingHead', label_smoothing=0.1),
            tokenizer=dict(type='VQTokenizer'),
            token_predictor=dict(type='TokenPredictor', arch='b')))
    model.init_weights()
    return model.to(device).eval()


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
    model = build_model(device)
    if variant == 'straightforward':

        def sample():
            return straightforward_generate(model, batch, steps, SEED)
    else:

        def sample():
            images, trace = model.generate(batch, steps=steps, seed=SEED, return_trace=True)
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
        peak_gib=peak,
        amp=variant == 'optimized' and device == 'cuda')


def machine(device):
    import torch
    if device == 'cuda':
        return f'{torch.cuda.get_device_name(0)}, torch {torch.__version__}'
    cpu = 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return (f'{cpu}, {os.cpu_count()} cores, torch {torch.__version__} '
            f'({torch.get_num_threads()} threads)')


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
        plain = explicit_attention() if args.variant == 'straightforward' else nullcontext()
        with plain:  # written-out attention in every block: the release's way
            result = run_variant(args.variant, device, batch, args.steps, repeats, warmup,
                                 args.dump)
        print(json.dumps(result))
        return
    rows, dumps = [], {}
    tmp = tempfile.mkdtemp(prefix='addp_generate_')
    for variant in ('straightforward', 'optimized'):
        dumps[variant] = osp.join(tmp, variant + '.pt')
        cmd = [
            sys.executable, __file__, '--device', device, '--batch-size',
            str(batch), '--steps',
            str(args.steps), '--repeats',
            str(repeats), '--warmup',
            str(warmup), '--variant', variant, '--dump', dumps[variant]
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    a, b = (torch.load(dumps[v]) for v in ('straightforward', 'optimized'))
    shutil.rmtree(tmp, ignore_errors=True)
    img_diff = (a['images'] - b['images']).abs().max().item()
    ids_equal = int((a['ids'] == b['ids']).sum())
    ids_total = a['ids'].numel()
    base, opt = rows
    speedup = opt['images_per_s'] / base['images_per_s']
    mem = 'peak GPU memory (GiB, allocated)' if device == 'cuda' else 'peak RSS (GiB, process)'
    flags = f'--device {device} --batch-size {batch} --steps {args.steps} --repeats {repeats} ' \
            f'--warmup {warmup}'
    lines = [
        f'\n## {device.upper()}: {machine(device)}\n',
        f'ViT-B/16 ADDP unconditional generation at 256 px ({args.steps} cosine steps, MAGE-B '
        f'predictor and VQGAN at released sizes, random weights), batch {batch}, {repeats} timed '
        f'call(s) after {warmup} warm-up; load average before the run '
        f'{os.getloadavg()[0]:.2f}.\n',
        f'Command: `python benchmarks/generate.py {flags}`\n',
        f'| variant | images/s | s per batch (mean / min) | s per step | {mem} | batch | steps |',
        '|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        name = r['variant'] + (' (bf16 autocast)' if r['amp'] else ' (fp32)')
        lines.append(f"| {name} | {r['images_per_s']:.3f} | {r['s_per_batch']:.1f} / "
                     f"{r['s_min']:.1f} | {r['s_per_batch'] / r['steps']:.2f} | "
                     f"{r['peak_gib']:.2f} | {r['batch']} | {r['steps']} |")
    lines += [
        f'\nSpeed-up: **{speedup:.2f}x**.\n',
        f'Same seed ({SEED}), both variants: final token ids equal at {ids_equal} / {ids_total} '
        f'positions; max abs image difference {img_diff:.2e}.\n',
    ]
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    new = not osp.exists(args.out)
    with open(args.out, 'a') as f:
        if new:
            f.write('# ADDP unconditional generation: throughput and peak memory\n')
        f.write('\n'.join(lines))
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
