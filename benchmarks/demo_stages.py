"""The training step of every demo stage, today's config against the
optimised one, side by side in one run.

    make data   # the bundled data the steps read (once)
    python benchmarks/demo_stages.py [--stages addp cls ...] [--steps N]

For each stage of ``make demo`` that trains (tokenizer, token predictor,
ADDP, classification with all labels and with 100 per class, Mask R-CNN,
UperNet) and one generation step (the linear probe is not here: it reads each
image once and fits scikit-learn's logistic regression, seconds per run), and
each variant of :data:`VARIANTS` (``today``: the demo's configs before the
speed work; ``optimized``: the configs as they are; levers measured and
rejected), in a process of its own:

- the model, optimizer wrapper and training dataloader are built from the
  config as ``tools/train.py`` would (MMEngine's registries, the config's
  default scope), with every checkpoint the config reads (the frozen
  tokenizer / predictor, the ADDP encoder) left at random weights: timing
  does not depend on the values;
- one real batch of ``data/demo`` goes through ``model.train_step`` (data
  preprocessor, forward, loss, backward, optimizer), the same call the
  runner makes; generation times one step of ``ADDP.generate``;
- the median of ``--steps`` steps after ``--warmup`` is reported with the
  FLOPs of one step (``torch.utils.flop_counter.FlopCounterMode``), the rate
  they reach and its share of the machine's GEMM peak measured in the same
  run (a 2048^2 matrix product in the dtype the step computes in: bf16 where
  the CPU has bf16 arithmetic, else fp32).

Threads are the demo's: the tokenizer runs alone with every core, the other
stages one thread each beside another stage (``tools/run_demo.py``). The
last table projects the demo's CPU time (step time x the config's
iterations x the number of runs of that stage in ``make demo``); evaluation,
data loading and start-up are not in it. Results are appended to
``benchmarks/results/demo_step.md``.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)
sys.path.insert(0, HERE)

from common import append_results, gemm_peak, has_fast_bf16, machine, median_seconds  # noqa: E402

ADDP = 'configs/addp/addp_vit-nano-p4_1xb64-1000i_demo.py'
#: stage -> its config, the data_root part of ``data/demo``, the keys that
#: name checkpoints (left at random weights here), the threads the demo gives
#: it and how many times ``make demo`` runs it (first and second seed,
#: random-weight baselines, token-input runs)
STAGES = dict(
    tokenizer=dict(
        config='configs/vq_tokenizer/vq-tokenizer-tiny-f4_1xb64-1000i_demo.py',
        part='imagenet',
        unload=(),
        threads=0,
        runs=1),
    token_predictor=dict(
        config='configs/token_predictor/token-predictor-tiny_1xb64-2400i_demo.py',
        part='imagenet',
        unload=('model.tokenizer.checkpoint', ),
        threads=1,
        runs=1),
    addp=dict(
        config=ADDP,
        part='imagenet',
        unload=('model.tokenizer.checkpoint', 'model.token_predictor.checkpoint'),
        threads=1,
        runs=2),
    cls=dict(
        config='configs/imagenet/addp-vit-nano-p4_1xb64-6000i_demo.py',
        part='imagenet',
        unload=('model.backbone.init_cfg', ),
        threads=1,
        runs=3),
    cls_few=dict(
        config='configs/imagenet/addp-vit-nano-p4_1xb64-1000i_demo-100-per-class.py',
        part='imagenet',
        unload=('model.backbone.init_cfg', ),
        threads=1,
        runs=4),
    det=dict(
        config='configs/mask_rcnn/mask-rcnn_addp-vit-nano-p4_simple-fpn_1xb8-500i_demo-64px.py',
        part='coco',
        unload=('model.backbone.init_cfg', ),
        threads=1,
        runs=3),
    seg=dict(
        config='configs/upernet/upernet_addp-vit-nano-p4_1xb8-1400i_demo-64x64.py',
        part='ade',
        unload=('model.backbone.init_cfg', ),
        threads=1,
        runs=3),
    generation=dict(
        config=ADDP,
        part='imagenet',
        unload=('model.tokenizer.checkpoint', 'model.token_predictor.checkpoint'),
        threads=1,
        runs=1),
)
#: generation: samples per batch and steps per sample (tools/run_demo.py)
GEN_SAMPLES, GEN_STEPS, GEN_BATCH = 256, 8, 64
#: variant -> stage -> config options on top of the stage's config (a stage
#: a variant does not name is not run in it). ``today``: the demo's configs
#: before the speed work (``docs/demo_speed.md``); ``optimized``: the configs
#: as they are, for the stages whose config changed (the others are today's:
#: two processes of one config differ by up to ~15 % on a busy 2-core
#: machine, which a second row would show as a false gain or loss); the
#: others are levers measured and rejected, kept so that their rows are
#: measured beside the ones kept.
_TOKENIZER_16 = {'model.tokenizer.base_channels': 16}
VARIANTS = {
    'today': {
        **{
            stage: {}
            for stage in STAGES
        },
        'token_predictor': {
            'model.encoder_drop': 0.0
        },
        'addp': {
            'model.token_predictor.encoder_drop': 0.0
        },
        'generation': {
            'model.token_predictor.encoder_drop': 0.0
        },
    },
    # the stages whose config changed; the others run today's config
    'optimized': {
        'token_predictor': {},
        'addp': {}
    },
    'tokenizer width 16 (rejected)': {
        'tokenizer': {
            'model.base_channels': 16
        },
        'token_predictor': _TOKENIZER_16,
        'addp': _TOKENIZER_16,
        'generation': _TOKENIZER_16,
    },
}


def stage_options(stage: str, variant: str) -> dict:
    """The config options of ``variant`` for ``stage``: checkpoints unloaded,
    the demo's data, and the variant's settings."""
    spec = STAGES[stage]
    root = osp.join(ROOT, 'data', 'demo', spec['part']) + '/'
    options = {key: None for key in spec['unload']}
    options['train_dataloader.dataset.data_root'] = root
    options['train_dataloader.num_workers'] = 0
    options['train_dataloader.persistent_workers'] = False
    options.update(VARIANTS[variant][stage])
    return options


def build(stage: str, variant: str):
    """Model, optimizer wrapper, one training batch and the config."""
    import torch
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, DefaultScope
    from mmengine.runner import Runner

    import mmaddp  # noqa: F401
    from mmaddp.utils.config import merge_cfg_options_strict
    cfg = Config.fromfile(osp.join(ROOT, STAGES[stage]['config']))
    merge_cfg_options_strict(cfg, stage_options(stage, variant))
    if stage == 'probe':  # its sampler takes a per-class subset file in the demo
        cfg.train_dataloader.dataset.pop('ann_file', None)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
        model.init_weights()
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
        batch = next(iter(loader))
    return model, wrapper, batch, cfg


def run_stage(stage: str, variant: str, steps: int, warmup: int) -> dict:
    """Time one stage's step in this process; returns the row as a dict."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    model, wrapper, batch, cfg = build(stage, variant)
    if stage == 'generation':
        model.eval()

        def step():
            model.generate(GEN_BATCH, steps=1, seed=0)
    else:
        model.train()

        def step():
            model.train_step(batch, wrapper)

    for _ in range(warmup):
        step()
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    seconds = median_seconds(step, steps)
    iters = (
        GEN_SAMPLES // GEN_BATCH * GEN_STEPS if stage == 'generation' else cfg.train_cfg.max_iters)
    return dict(
        stage=stage,
        variant=variant,
        threads=torch.get_num_threads(),
        s_per_step=seconds,
        gflop=counter.get_total_flops() / 1e9,
        iters=iters,
        runs=STAGES[stage]['runs'])


def measure_peak() -> dict:
    """GEMM GFLOP/s per thread count the stages use, in this process."""
    import torch
    peaks = {}
    for threads in sorted({s['threads'] or os.cpu_count() for s in STAGES.values()}):
        torch.set_num_threads(threads)
        peaks[threads] = gemm_peak('cpu')
    return peaks


def table(rows, peaks, bf16: bool) -> list:
    kind = 'bf16' if bf16 else 'fp32'
    lines = [
        '| stage | threads | variant | s / step | speed-up | GFLOP / step | GFLOP/s | '
        f'share of {kind} GEMM peak |', '|---|---|---|---|---|---|---|---|'
    ]
    today = {r['stage']: r['s_per_step'] for r in rows if r['variant'] == 'today'}
    for r in rows:
        rate = r['gflop'] / r['s_per_step']
        peak = peaks[r['threads']][kind]
        lines.append(f"| {r['stage']} | {r['threads']} | {r['variant']} | {r['s_per_step']:.3f} | "
                     f"{today[r['stage']] / r['s_per_step']:.2f}x | {r['gflop']:.2f} | "
                     f'{rate:.0f} | {100 * rate / peak:.0f} % |')
    lines += [
        '', "Projected CPU time of the demo's steps (s / step x iterations x runs):", '',
        '| stage | iterations x runs | today (s) | optimized (s) |', '|---|---|---|---|'
    ]
    total = dict(today=0.0, optimized=0.0)
    for stage in dict.fromkeys(r['stage'] for r in rows):
        secs = {
            r['variant']: r['s_per_step'] * r['iters'] * r['runs']
            for r in rows if r['stage'] == stage
        }
        changed = 'optimized' in secs
        secs.setdefault('optimized', secs['today'])  # the same config
        for v in total:
            total[v] += secs[v]
        one = next(r for r in rows if r['stage'] == stage)
        lines.append(f"| {stage} | {one['iters']} x {one['runs']} | {secs['today']:.0f} | "
                     f"{secs['optimized']:.0f}{'' if changed else ' (unchanged)'} |")
    lines.append(f"| **sum** | | **{total['today']:.0f}** | **{total['optimized']:.0f}** "
                 f"({total['today'] / max(total['optimized'], 1e-9):.2f}x) |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--stages', nargs='+', default=list(STAGES), choices=list(STAGES))
    parser.add_argument('--steps', type=int, default=7, help='timed steps (median reported)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--child', nargs=2, metavar=('STAGE', 'VARIANT'), help=argparse.SUPPRESS)
    parser.add_argument('--out', default=osp.join(HERE, 'results', 'demo_step.md'))
    args = parser.parse_args()
    if args.child:  # one stage and variant; JSON on the last line
        print(json.dumps(run_stage(*args.child, args.steps, args.warmup)))
        return
    if not osp.isdir(osp.join(ROOT, 'data', 'demo')):
        raise SystemExit('data/demo not found: run `make data` first')
    rows = []
    for stage in args.stages:
        threads = STAGES[stage]['threads'] or os.cpu_count()
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        for variant in (v for v in VARIANTS if stage in VARIANTS[v]):
            cmd = [
                sys.executable, __file__, '--child', stage, variant, '--steps',
                str(args.steps), '--warmup',
                str(args.warmup)
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            if done.returncode:
                raise SystemExit(f'{stage} ({variant}) failed:\n{done.stderr[-3000:]}')
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    peaks = measure_peak()
    bf16 = has_fast_bf16('cpu')
    lines = [
        f"\n## Every demo stage's step, {time.strftime('%Y-%m-%d')}; CPU: {machine('cpu')}\n",
        f'`python benchmarks/demo_stages.py` (median of {args.steps} steps after '
        f'{args.warmup} warm-up, one process per row; GEMM peak {kind_peaks(peaks)}).\n',
        *table(rows, peaks, bf16)
    ]
    append_results(args.out, "The demo's steps", lines)


def kind_peaks(peaks) -> str:
    parts = []
    for threads, p in sorted(peaks.items()):
        bf16 = f", bf16 {p['bf16']:.0f}" if p['bf16'] else ''
        parts.append(f"{threads} thread(s): fp32 {p['fp32']:.0f}{bf16} GFLOP/s")
    return '; '.join(parts)


if __name__ == '__main__':
    main()
