"""Pixel versus token input (the ADDP seed's ablation) on the three tiny tasks.

The same tiny ADDP checkpoint is fine-tuned twice per task with the same
schedule: the encoder reads pixels (``ADDPViT`` as pretrained) or the frozen
tokenizer's code ids (``ADDPViT(token_input=...)``: embedded ids with the
pretrained positions and blocks). The stages are those of the demo
(tools/run_demo.py) and share its work dir, so finished runs are reused.

    python benchmarks/pixel_vs_token.py [--work-dir work_dirs/demo] [--quick]

Writes benchmarks/results/pixel_vs_token.md (or --out).
"""
import argparse
import os.path as osp
import platform
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))

from demo.stages import tools_stopped_on_failure
from run_demo import CONFIGS, Demo

METRICS = dict(
    cls=[('top1', 'top-1 (%)')],
    det=[('bbox_AP50', 'box AP50'), ('segm_AP50', 'mask AP50'), ('bbox_AP', 'box AP'),
         ('segm_AP', 'mask AP')],
    seg=[('mIoU', 'mIoU'), ('aAcc', 'pixel acc. (%)')])
TASKS = dict(
    cls='classification (10 digits, 32 px)',
    det='Mask R-CNN (digit scenes read at 64 px)',
    seg='UperNet (digit scenes read at 64 px)')

#: the demo's stages behind the table
STAGES = ('cls', 'cls_token', 'cls_token_ids', 'det', 'det_token', 'seg', 'seg_token')


def render(table, demo: Demo, wall: float) -> str:
    from mmaddp.engine.optimizers import cpu_flags
    flags = ', '.join(
        sorted(cpu_flags() & {'avx2', 'avx512f', 'avx512_bf16', 'amx_bf16'})) or 'none'
    lines = [
        '# Pixel versus token input', '',
        'The same tiny ADDP checkpoint, fine-tuned with the same schedule, the encoder '
        'reading pixels or the frozen tokenizer\'s code ids (one id per 4 px patch, a '
        'learned embedding per code; position embeddings and blocks from the checkpoint).', '',
        f'Command: `python benchmarks/pixel_vs_token.py --work-dir {demo.work}'
        f'{" --quick" if demo.mode == "quick" else ""}`  ', f'Mode: {demo.mode}; '
        f'{platform.processor() or platform.machine()} (CPU flags: {flags}), '
        f'{torch.get_num_threads()} threads, '
        f'torch {torch.__version__}; {wall / 60:.1f} min (finished stages reused).', '',
        '| task | metric | pixels | tokens | config |', '|---|---|---|---|---|'
    ]
    for task, (pixel, token) in table.items():
        for key, label in METRICS[task]:
            lines.append(f'| {TASKS[task]} | {label} | {pixel[key]:.2f} | {token[key]:.2f} | '
                         f'`{CONFIGS[task]}` |')
    seconds = {k: v['seconds'] for k, v in demo.records.items()}
    lines += [
        '', 'Wall time of each run (s, as recorded by the run that made it; det_token '
        'and seg_token encode every training image with the frozen tokenizer, '
        'cls_token reads the code ids of its augmented views that cls_token_ids '
        'encoded once): ' + ', '.join(f'{k} {seconds[k]:.0f}'
                                      for k in sorted(seconds) if k in STAGES) + '.'
    ]
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/demo')
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--jobs', type=int, default=2, help='runs at once (see tools/run_demo.py)')
    parser.add_argument(
        '--out', default=osp.join(ROOT, 'benchmarks', 'results', 'pixel_vs_token.md'))
    args = parser.parse_args()
    start = time.time()
    demo = Demo(args.work_dir, args.data_root, 'quick' if args.quick else 'full', jobs=args.jobs)
    with tools_stopped_on_failure():
        demo.run(STAGES)
    table = {task: (demo.result(task), demo.result(f'{task}_token')) for task in TASKS}
    with open(args.out, 'w') as f:
        f.write(render(table, demo, time.time() - start))
    print(open(args.out).read())


if __name__ == '__main__':
    main()
