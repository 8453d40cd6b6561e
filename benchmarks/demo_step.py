"""Seconds per step of the demo's ADDP config: fp32, bf16 autocast (what
the config selects) and bf16 autocast with the frozen parts held in bf16,
side by side, on one and two threads (the demo runs ADDP on one thread beside
another stage).

    python benchmarks/demo_step.py [--config CFG] [--steps N] [--threads 1 2]

``*_keep`` variants keep freed host memory for reuse
(:func:`mmaddp.utils.keep_freed_host_memory`, what ``tools/train.py`` does
on a machine without CUDA); the others run with glibc's defaults.

The model is built from the config with the frozen tokenizer and predictor at
random weights (their checkpoints are the demo's outputs; timing does not
depend on the values), the optimizer wrapper from the config with autocast on
or off. Each variant runs in its own process. Results are appended to
``benchmarks/results/demo_step.md``.
"""
import argparse
import json
import os.path as osp
import subprocess
import sys

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)
sys.path.insert(0, HERE)

from common import (append_results, base_variant, has_fast_bf16, keep_memory_if_asked, machine,
                    median_seconds, variant_env)

DEFAULT_CONFIG = 'configs/addp/addp_vit-nano-p4_1xb64-1000i_demo.py'
#: variant -> (autocast on, frozen_precision)
VARIANTS = dict(fp32=(False, 'autocast'), bf16=(True, 'autocast'), bf16_frozen=(True, 'bf16'))
NAMES = dict(
    fp32='fp32 (CPUBf16OptimWrapper off)',
    bf16='bf16 autocast (the config)',
    bf16_frozen="bf16 autocast, frozen_precision='bf16'")


def run_variant(config, variant, steps, warmup):
    import torch
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper

    import mmaddp  # noqa: F401
    from mmaddp.registry import MODELS
    autocast, frozen = VARIANTS[base_variant(variant)]
    cfg = Config.fromfile(config)
    cfg.model.tokenizer.checkpoint = None
    cfg.model.token_predictor.checkpoint = None
    cfg.model.frozen_precision = frozen
    cfg.optim_wrapper.enabled = autocast
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    batch = cfg.train_dataloader.batch_size
    size = cfg.model.backbone.img_size
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=gen)
    length = model.neck.num_tokens
    mask_t, mask_next = model.mask_schedule.masks_for(batch, length, 20, 23, generator=gen)

    def step():
        with wrapper.optim_context(model):
            loss = model.denoising_loss(images, mask_t, mask_next)
        wrapper.update_params(loss)
        return float(loss)

    first_loss = step()
    for _ in range(warmup - 1):
        step()
    return dict(
        variant=variant,
        threads=torch.get_num_threads(),
        s_per_step=median_seconds(step, steps),
        first_loss=first_loss)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--steps', type=int, default=15, help='timed steps (median reported)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--variant', help=argparse.SUPPRESS)
    parser.add_argument('--out', default=osp.join(HERE, 'results', 'demo_step.md'))
    args = parser.parse_args()
    if args.variant:  # child process: one variant, JSON on the last line
        keep_memory_if_asked(args.variant)
        print(json.dumps(run_variant(args.config, args.variant, args.steps, args.warmup)))
        return
    if not has_fast_bf16('cpu'):
        raise SystemExit('demo_step compares bf16 with fp32; this CPU has no bf16 arithmetic')
    rows = []
    for threads in args.threads:
        for variant in [*VARIANTS, *(f'{v}_keep' for v in VARIANTS)]:
            env = dict(variant_env(variant, 'cpu', True, None), OMP_NUM_THREADS=str(threads))
            cmd = [
                sys.executable, __file__, '--config', args.config, '--steps',
                str(args.steps), '--warmup',
                str(args.warmup), '--variant', variant
            ]
            out = subprocess.run(
                cmd, check=True, capture_output=True, text=True, env=env, cwd=ROOT).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    import torch
    torch.set_num_threads(max(args.threads))
    lines = [
        f'\n## CPU: {machine("cpu")}\n',
        f'`{args.config}` (batch and image size from the config, frozen parts at random '
        f'weights), median of {args.steps} steps after {args.warmup} warm-up; '
        '`python benchmarks/demo_step.py`.\n',
        '| threads | variant | s / step | vs fp32 | loss (first step) |',
        '|---|---|---|---|---|',
    ]
    base = {r['threads']: r['s_per_step'] for r in rows if r['variant'] == 'fp32'}  # glibc's
    for r in rows:
        name = NAMES[base_variant(r['variant'])] + ('; host memory kept for reuse'
                                                    if r['variant'].endswith('_keep') else '')
        lines.append(f"| {r['threads']} | {name} | {r['s_per_step']:.3f} | "
                     f"{base[r['threads']] / r['s_per_step']:.2f}x | {r['first_loss']:.4f} |")
    append_results(args.out, "The demo's ADDP step: fp32 against bf16", lines)


if __name__ == '__main__':
    main()
