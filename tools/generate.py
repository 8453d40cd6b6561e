"""Unconditional ADDP samples from a checkpoint: DIR/000000.png ... plus DIR/grid.png.

A shell over :class:`mmaddp.apis.ADDPGenerationInferencer` that spreads the
samples over processes and writes the grid of the whole run.

Sample i is made from its own seed (derived from --seed and i), so the files do
not depend on the number of processes or the batch size. With several
processes (tools/dist_generate.sh) rank r makes samples r, r + W, r + 2W, ...
No dataset is built; the config's dataloaders may be absent or None.

    python tools/generate.py CONFIG CKPT --num-samples 64 --out samples/
    bash tools/dist_generate.sh CONFIG CKPT 2 --num-samples 50000 --out samples/
    # the baseline ADDP must beat: its token predictor sampling alone, MAGE-style
    python tools/generate.py CONFIG CKPT --sampler predictor --out predictor_samples/

``--sampler predictor`` runs the same sampler (steps, schedule, temperature,
seeds) with the config's frozen token predictor reading the ids, decoded by
its tokenizer: ADDP's encoder and decoder are not used. Two reference points
for FID tables: ``--sampler start`` writes ADDP's start image (the decode of
the fully masked state) for every sample, ``--sampler noise`` uniform noise
of the same size (sample i from its own seed).

``--start-from FOLDER`` starts sample i from the i-th image of FOLDER
(sorted, recursive, cycling) instead of the decode of the fully masked
state: the protocol of the authors' released generation code, which feeds a
validation image at the first step (data enters the samples; use it to
reproduce the paper's FID, not as unconditional generation).

    python tools/generate.py CONFIG CKPT --start-from data/demo/imagenet/val --out release_start/
"""
import argparse
import os
import os.path as osp

import torch
from mmengine.config import DictAction
from mmengine.dist import barrier, get_dist_info, init_dist, is_distributed
from mmengine.utils import ProgressBar

import mmaddp  # noqa: F401
from mmaddp.apis import ADDPGenerationInferencer
from mmaddp.apis.generation_inferencer import SAMPLERS
from mmaddp.utils import (close_launch, exit_on_bad_input, load_tool_config, prepare_cpu_memory,
                          prepare_launch)
from mmaddp.utils.generation import (SAMPLE_NAME, check_output_dir, iter_batches, list_sample_files,
                                     shard_indices)

GRID_NAME = 'grid.png'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Generate images with an ADDP checkpoint')
    parser.add_argument('config', help='ADDP config file (its model is built, no dataset)')
    parser.add_argument('checkpoint', help='ADDP checkpoint (runner or released layout)')
    parser.add_argument('--out', required=True, help='output directory for the PNG files')
    parser.add_argument('--num-samples', type=int, default=64)
    parser.add_argument(
        '--sampler',
        choices=SAMPLERS,
        default='addp',
        help='addp: alternate decode and predict (ADDP); predictor: the '
        'token predictor alone on the ids (MAGE-style baseline); start / '
        'noise: the start image repeated / uniform noise (FID references)')
    parser.add_argument(
        '--start-from',
        metavar='FOLDER',
        help="start sample i from FOLDER's i-th image (the release's protocol; "
        'default: the decode of the fully masked state, no data read)')
    parser.add_argument('--steps', type=int, default=20, help='generation steps')
    parser.add_argument('--schedule', choices=['cosine', 'linear'], default='cosine')
    parser.add_argument(
        '--temperature',
        type=float,
        default=6.0,
        help='Gumbel temperature of the reveal order (decays to 0)')
    parser.add_argument(
        '--no-temperature-decay',
        action='store_true',
        help='keep --temperature constant over the steps')
    parser.add_argument('--top-p', type=float, default=None, help='nucleus sampling of ids')
    parser.add_argument('--seed', type=int, default=0, help='base seed of the per-sample seeds')
    parser.add_argument('--batch-size', type=int, default=16, help='samples per forward, per rank')
    parser.add_argument('--nrow', type=int, default=8, help='images per row of grid.png')
    parser.add_argument(
        '--grid-size', type=int, default=64, help='grid.png shows the first this many samples')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='allow a non-empty --out (its NNNNNN.png and grid.png are replaced)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config (key=value)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if args.num_samples < 1:
        parser.error('--num-samples must be >= 1')
    if args.steps < 1:
        parser.error('--steps must be >= 1')
    if args.batch_size < 1:
        parser.error('--batch-size must be >= 1')
    if args.seed < 0:
        parser.error('--seed must be >= 0')
    if args.top_p is not None and not 0 < args.top_p <= 1:
        parser.error('--top-p must be in (0, 1]')
    args.work_dir = None  # load_tool_config's attribute; nothing is written there
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def setup_distributed(cfg, launcher: str) -> None:
    """gloo on CPU (``prepare_launch``), else MMEngine's ``init_dist``."""
    cfg.launcher = launcher
    prepare_launch(cfg)
    if launcher != 'none' and not is_distributed():
        init_dist(launcher, **cfg.get('env_cfg', {}).get('dist_cfg', {}))


def prepare_output(out: str, overwrite: bool) -> None:
    """Checked on every rank before anyone writes; rank 0 then clears old
    samples (with --overwrite) and creates the folder."""
    check_output_dir(out, overwrite)
    barrier()
    rank, _ = get_dist_info()
    if rank == 0:
        os.makedirs(out, exist_ok=True)
        for name in os.listdir(out):
            if SAMPLE_NAME.match(name) or name == GRID_NAME:
                os.remove(osp.join(out, name))
    barrier()


def write_grid(out: str, num_samples: int, grid_size: int, nrow: int) -> str:
    """Check that exactly the expected files exist, then save the grid of
    the first ``grid_size`` samples."""
    import numpy as np
    from PIL import Image
    from torchvision.utils import make_grid, save_image
    names = list_sample_files(out)
    expect = [f'{i:06d}.png' for i in range(num_samples)]
    if names != expect:
        missing = sorted(set(expect) - set(names))
        raise RuntimeError(f'{out} should hold {num_samples} samples; missing {missing[:5]}, '
                           f'unexpected {sorted(set(names) - set(expect))[:5]}')
    images = [
        torch.from_numpy(np.array(Image.open(osp.join(out, n)).convert('RGB')))
        for n in names[:grid_size]
    ]
    grid = make_grid(torch.stack(images).permute(0, 3, 1, 2).float() / 255, nrow=nrow, padding=2)
    path = osp.join(out, GRID_NAME)
    save_image(grid, path)
    return path


def main(argv=None):
    args = parse_args(argv)
    cfg = load_tool_config(args)
    setup_distributed(cfg, args.launcher)
    rank, world_size = get_dist_info()
    if torch.cuda.is_available():
        device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device('cpu')
        prepare_cpu_memory()
    check_output_dir(args.out, args.overwrite)  # fail fast, before building
    inferencer = ADDPGenerationInferencer(
        cfg,
        args.checkpoint,
        device,
        scope=cfg.get('default_scope', 'mmpretrain'),
        sampler=args.sampler,
        show_progress=False,
        start_from=args.start_from)
    prepare_output(args.out, args.overwrite)

    indices = shard_indices(args.num_samples, rank, world_size)
    bar = ProgressBar(len(indices)) if rank == 0 else None
    # a few batches per call: the inferencer keeps a call's samples in memory
    for chunk in iter_batches(indices, args.batch_size * 4):
        inferencer(
            chunk,
            batch_size=args.batch_size,
            seed=args.seed,
            out_dir=args.out,
            grid=False,
            steps=args.steps,
            schedule=args.schedule,
            temperature=args.temperature,
            temperature_decay=not args.no_temperature_decay,
            top_p=args.top_p)
        if bar is not None:
            bar.update(len(chunk))
    barrier()  # every rank's files are written
    if rank == 0:
        print()
        grid = write_grid(args.out, args.num_samples, args.grid_size, args.nrow)
        start = f'start {args.start_from}' if args.start_from else 'start: fully masked decode'
        print(f'{args.num_samples} samples ({world_size} process(es), sampler {args.sampler}, '
              f'{start}, seed {args.seed}, '
              f'{args.steps} {args.schedule} steps) in {args.out}; grid: {grid}')
    close_launch()  # waits for rank 0's grid too


if __name__ == '__main__':
    exit_on_bad_input(main)
