"""Train a model from a config of mmpretrain, mmdet or mmseg flavour.

The config's ``default_scope`` picks the registries; mmaddp is imported so
its models are registered in all three scopes.
"""
import argparse
import os

import torch
from mmengine.config import DictAction
from mmengine.dist import is_main_process
from mmengine.runner import Runner, find_latest_checkpoint

import mmaddp  # noqa: F401  (registers models, allow-lists checkpoint classes)
from mmaddp.checkpoint import (check_runner_checkpoint, load_checkpoint_file,
                               newest_readable_checkpoint)
from mmaddp.engine.optimizers import cpu_has_fast_bf16
from mmaddp.utils import (close_launch, exit_on_bad_input, load_tool_config, prepare_cpu_memory,
                          prepare_launch, save_test_metrics)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model with MMEngine')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and checkpoints')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or from the latest checkpoint in the '
        'work dir when no path is given')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision: AmpOptimWrapper on a GPU, bf16 autocast on a CPU '
        'with bf16 arithmetic (CPUBf16OptimWrapper)')
    parser.add_argument(
        '--no-validate', action='store_true', help='skip validation during training')
    parser.add_argument(
        '--test',
        action='store_true',
        help='after training, evaluate the final weights with the config\'s '
        'test settings, as tools/test.py does with the last checkpoint, and '
        'write WORK_DIR/test_metrics.json (saves starting a second process)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, as key=value pairs (e.g. '
        'train_cfg.max_iters=10); a key that the config lacks is an error')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def select_amp_wrapper(cfg) -> None:
    """``--amp``: mmengine's ``AmpOptimWrapper`` on a GPU; on a CPU with bf16
    arithmetic (``avx512_bf16`` / ``amx_bf16``) mmaddp's
    ``CPUBf16OptimWrapper``; on any other CPU, stop and say why."""
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if torch.cuda.is_available():
        if wrapper != 'AmpOptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        return
    if not cpu_has_fast_bf16():
        raise RuntimeError('--amp on CPU needs bf16 arithmetic in hardware (avx512_bf16 or '
                           'amx_bf16 in /proc/cpuinfo); this CPU has neither, so bf16 would be '
                           'slower than fp32. Drop --amp on this machine.')
    cfg.optim_wrapper.type = 'CPUBf16OptimWrapper'
    cfg.optim_wrapper.pop('loss_scale', None)
    cfg.optim_wrapper.pop('dtype', None)
    cfg.optim_wrapper['enabled'] = True
    print('--amp: CPUBf16OptimWrapper (bf16 autocast on this CPU)', flush=True)


def choose_resume_checkpoint(cfg) -> None:
    """``--resume`` without a path: the newest readable runner checkpoint
    of the work dir (saying which newer ones were skipped and why); a fresh
    start when the work dir has none; an error when it has some but none
    loads (a fresh start would overwrite them)."""
    path, skipped = newest_readable_checkpoint(cfg.work_dir)
    for line in skipped:
        print(f'--resume: {line}', flush=True)
    if path is None and skipped:
        raise ValueError(f'--resume: no readable checkpoint in {cfg.work_dir} '
                         f'({len(skipped)} tried, see above)')
    if path is None:
        print(f'--resume: no checkpoint in {cfg.work_dir}; starting from scratch', flush=True)
        cfg.resume, cfg.load_from = False, None
        return
    print(f'--resume: resuming from {path}', flush=True)
    cfg.resume, cfg.load_from = True, path


def main():
    args = parse_args()
    cfg = load_tool_config(args)

    if args.amp:
        select_amp_wrapper(cfg)

    if args.resume == 'auto':
        choose_resume_checkpoint(cfg)
    elif args.resume is not None:
        check_runner_checkpoint(args.resume)
        cfg.resume = True
        cfg.load_from = args.resume
    elif cfg.get('load_from'):
        load_checkpoint_file(cfg.load_from, mmap=True)  # one line naming a bad file, up front

    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None

    prepare_launch(cfg)
    prepare_cpu_memory()
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        from mmengine.registry import RUNNERS
        runner = RUNNERS.build(cfg)
    runner.train()
    if args.test:
        metrics = runner.test()
        if is_main_process():
            ckpt = find_latest_checkpoint(runner.work_dir)
            metrics = save_test_metrics(runner.work_dir, args.config, ckpt, metrics)
        print(metrics)
    close_launch()


if __name__ == '__main__':
    exit_on_bad_input(main)
