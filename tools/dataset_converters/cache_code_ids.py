"""Encode augmented views of a token-input classification run's training set
once, so that the run reads code ids instead of encoding every batch.

    python tools/dataset_converters/cache_code_ids.py CONFIG --out FILE.npz \\
        [--views V] [--seed S] [--cfg-options KEY=VALUE ...]

CONFIG is the run's config (its backbone has ``token_input``); V defaults to
the number of passes its schedule makes over the training set where its data
preprocessor has batch augments, else to 1 (every view would be the same).
Train the run on the file with::

    --cfg-options train_dataloader.dataset.type=CodeIdDataset \\
        train_dataloader.dataset.cache=FILE.npz ... data_preprocessor.type=CodeIdDataPreprocessor

(``tools/run_demo.py`` does this for the demo's cls_token run).
"""
import argparse
import math
import os
import os.path as osp
import sys
import time
from typing import Optional

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.utils import ProgressBar

from mmaddp.registry import DATASETS


def encode_training_views(cfg,
                          out: str,
                          views: Optional[int] = None,
                          seed: int = 0,
                          batch_size: int = 256,
                          log=print,
                          show_progress: bool = False) -> dict:
    """Encode ``views`` augmented copies of the training set of ``cfg`` (a
    classification config whose backbone has ``token_input``); write ``out``.
    ``views`` defaults to the passes of the schedule where the data
    preprocessor has batch augments, else 1.

    The images go through the config's training pipeline once, then, per view,
    through its data preprocessor in training mode (normalisation and batch
    augments) and the backbone's pixels -> code ids mapping
    (``CodeTokenEmbed.code_ids``, frozen tokenizer). The ViT itself is not
    built. Written to ``out.tmp.npz`` and renamed, so an interrupted run leaves
    no ``out``; the caller's torch random stream is left as it was.
    ``show_progress`` draws mmengine's progress bar over the batches (stderr).
    """
    from mmengine.registry import init_default_scope

    token_input = cfg.model.backbone.get('token_input')
    if not token_input:
        raise ValueError('encode_training_views needs a config whose model.backbone.token_input '
                         'names the tokenizer; this one reads pixels')
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    generator_state = torch.random.get_rng_state()
    try:
        return _encode(cfg, token_input, out, views, seed, batch_size, log, show_progress)
    finally:
        torch.random.set_rng_state(generator_state)


def _encode(cfg, token_input, out, views, seed, batch_size, log, show_progress) -> dict:
    from mmpretrain.registry import MODELS

    from mmaddp.models.adapters import CodeTokenEmbed

    # the run's data preprocessor (the classifier's default type when unnamed)
    pre_cfg = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    preprocessor = MODELS.build(dict(dict(type='ClsDataPreprocessor'), **pre_cfg))
    embed = CodeTokenEmbed(embed_dims=1, patch_size=cfg.model.backbone.patch_size, **token_input)

    loader_cfg = cfg.train_dataloader
    dataset = DATASETS.build(loader_cfg.dataset)
    n = len(dataset)
    if views is None:  # the training pipeline runs once: views differ by batch augments only
        views = (
            math.ceil(cfg.train_cfg.max_iters * loader_cfg.batch_size /
                      n) if pre_cfg.get('batch_augments') else 1)
    if views < 1:
        raise ValueError(f'views must be >= 1, got {views}')
    # the training pipeline's output (decoded, unaugmented images), held once
    items = [dataset[i] for i in range(n)]
    images = torch.stack([item['inputs'] for item in items])
    samples = [item['data_samples'] for item in items]
    labels = np.array([int(sample.gt_label[0]) for sample in samples], np.int64)
    dtype = np.uint8 if embed.num_codes <= 256 else np.int16
    ids = None
    bar = ProgressBar(views * math.ceil(n / batch_size), file=sys.stderr) if show_progress else None
    torch.manual_seed(seed)
    with torch.no_grad():
        for view in range(views):
            for start in range(0, n, batch_size):
                data = dict(
                    inputs=images[start:start + batch_size],
                    data_samples=samples[start:start + batch_size])
                codes = embed.code_ids(preprocessor(data, training=True)['inputs']).numpy()
                if ids is None:
                    ids = np.empty((views, n) + codes.shape[1:], dtype)
                ids[view, start:start + len(codes)] = codes
                if bar is not None:
                    bar.update()
            if bar is None:
                log(f'progress: code ids of view {view + 1}/{views} ({n} images) encoded')
    tmp = out + '.tmp.npz'  # np.savez appends .npz to names without it
    np.savez(
        tmp,
        ids=ids,
        labels=labels,
        num_codes=embed.num_codes,
        tokenizer=str(token_input['tokenizer'].get('checkpoint')))
    os.replace(tmp, out)
    return dict(file=out, views=views, images=n, grid=list(ids.shape[2:]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='classification config with model.backbone.token_input')
    parser.add_argument('--out', required=True, help='output .npz file')
    parser.add_argument(
        '--views',
        type=int,
        default=None,
        help='augmented views per image (default: passes of the schedule, 1 '
        'without batch augments)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the augmentation draws')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        default={},
        help='override config keys, as in tools/train.py')
    args = parser.parse_args()
    if not osp.isfile(args.config):
        parser.error(f'no config file at {args.config}')
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    start = time.time()
    info = encode_training_views(
        cfg, args.out, views=args.views, seed=args.seed, show_progress=True)
    print(f'wrote {info["file"]}: {info["views"]} views x {info["images"]} images, grid '
          f'{info["grid"]}, in {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
