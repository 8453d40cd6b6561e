"""Throughput and peak memory of one ADDP pretraining step (forward +
backward + AdamW) for ViT-B/16 at 256 px, against a straightforward variant.

    python benchmarks/pretrain_step.py [--device cpu|cuda] [--batch N] [--steps N]

* ``optimized``: mmaddp's ADDP as shipped: both token-predictor passes in
  one batched forward, attention by ``F.scaled_dot_product_attention``, and
  bf16 autocast where the device supports it (CUDA).
* ``straightforward``: two separate token-predictor passes and attention
  written out by hand (q k^T, softmax, @ v) in fp32, no autocast.

Both use the same random weights, images and masks; their losses are
reported side by side (equal up to bf16 rounding). Each variant runs in its
own process so peak memory is its own. Results are appended to
``benchmarks/results/pretrain_step.md``.
"""
import argparse
import json
import os
import os.path as osp
import platform
import resource
import subprocess
import sys
import time
from contextlib import nullcontext

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, osp.dirname(HERE))


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
                out_type='raw',
                drop_rate=0.0,
                attn_drop_rate=0.0),
            neck=dict(
                type='TokenDecoder',
                in_channels=768,
                embed_dims=768,
                depth=8,
                num_heads=16,
                num_tokens=256,
                vocab_size=2025,
                drop_rate=0.0),
            head=dict(type='DenoisingHead'),
            tokenizer=dict(type='VQTokenizer'),
            token_predictor=dict(type='TokenPredictor', arch='b', drop_rate=0.0)))
    model.init_weights()
    return model.to(device).train()


def make_straightforward(model):
    """Two predictor passes (the release's corruption); the caller runs it
    inside ``explicit_attention()`` (hand-written fp32 attention)."""
    import torch

    @torch.no_grad()
    def corrupt(images, mask_t, mask_next):
        tok, pred = model.tokenizer, model.token_predictor
        ids, e0 = tok.encode(images)
        b, h, w = ids.shape
        ids = ids.flatten(1)
        p_next = pred.predict_probs(ids, mask_next)
        q_t = pred.predict_probs(ids, mask_t)
        soft = tok.soft_embed(p_next.view(b, h, w, -1))
        z_t = torch.where(mask_t.view(b, 1, h, w), soft, e0)
        return ids, tok.decode(z_t).clamp(0, 1), q_t

    model.corrupt = corrupt
    return model


def run_variant(variant, device, batch, steps, warmup):
    import torch
    model = build_model(device)
    use_amp = variant == 'optimized' and device == 'cuda'
    if variant == 'straightforward':
        make_straightforward(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, 256, 256, generator=gen).to(device)
    mask_t, mask_next = model.mask_schedule.masks_for(batch, 256, 20, 23, generator=gen)
    mask_t, mask_next = mask_t.to(device), mask_next.to(device)

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=use_amp):
            loss = model.denoising_loss(images, mask_t, mask_next)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    first_loss = step()
    for _ in range(warmup - 1):
        step()
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == 'cuda':
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated() /
        2**30 if device == 'cuda' else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return dict(
        variant=variant,
        device=device,
        batch=batch,
        steps=steps,
        images_per_s=batch * steps / elapsed,
        peak_gib=peak,
        first_loss=first_loss,
        amp=use_amp)


def machine(device):
    import torch
    if device == 'cuda':
        return f'{torch.cuda.get_device_name(0)}, torch {torch.__version__}'
    cpu = platform.processor() or 'unknown CPU'
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
    parser.add_argument('--batch', type=int, default=None)
    parser.add_argument('--steps', type=int, default=None)
    parser.add_argument('--warmup', type=int, default=None)
    parser.add_argument('--variant', help=argparse.SUPPRESS)
    parser.add_argument('--out', default=osp.join(HERE, 'results', 'pretrain_step.md'))
    args = parser.parse_args()
    import torch
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    batch = args.batch or (64 if device == 'cuda' else 2)
    steps = args.steps or (10 if device == 'cuda' else 2)
    warmup = args.warmup or (3 if device == 'cuda' else 1)
    if args.variant:  # child process: one variant, JSON on the last line
        from mmaddp.models.layers import explicit_attention
        plain = explicit_attention() if args.variant == 'straightforward' else nullcontext()
        with plain:  # written-out attention in every block: the release's way
            result = run_variant(args.variant, device, batch, steps, warmup)
        print(json.dumps(result))
        return
    rows = []
    for variant in ('straightforward', 'optimized'):
        cmd = [
            sys.executable, __file__, '--device', device, '--batch',
            str(batch), '--steps',
            str(steps), '--warmup',
            str(warmup), '--variant', variant
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    base, opt = rows
    speedup = opt['images_per_s'] / base['images_per_s']
    mem = 'peak GPU memory (GiB, allocated)' if device == 'cuda' else 'peak RSS (GiB, process)'
    lines = [
        f'\n## {device.upper()}: {machine(device)}\n',
        f'ViT-B/16 ADDP step at 256 px (MAGE ViT-B predictor, released-size VQGAN), batch '
        f'{batch}, {steps} timed steps after {warmup} warm-up; `python benchmarks/pretrain_step.py '
        f'--device {device}`.\n',
        f'| variant | images/s | {mem} | loss (first step) |',
        '|---|---|---|---|',
    ]
    for r in rows:
        name = r['variant'] + (' (bf16 autocast)' if r['amp'] else ' (fp32)')
        lines.append(f"| {name} | {r['images_per_s']:.2f} | {r['peak_gib']:.2f} | "
                     f"{r['first_loss']:.4f} |")
    lines.append(f'\nSpeed-up: **{speedup:.2f}x** (target >= 1.3x).\n')
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    new = not osp.exists(args.out)
    with open(args.out, 'a') as f:
        if new:
            f.write('# ADDP pretraining step: throughput and peak memory\n')
        f.write('\n'.join(lines))
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
