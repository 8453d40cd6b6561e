"""Encode augmented views of a token-input classification run's training set
once, so that the run reads code ids instead of encoding every batch.

    python tools/dataset_converters/cache_code_ids.py CONFIG --out FILE.npz \\
        [--views V] [--seed S] [--cfg-options KEY=VALUE ...]

CONFIG is the run's config (its backbone has ``token_input``); V defaults to
the number of passes its schedule makes over the training set. Train the run
on the file with::

    --cfg-options train_dataloader.dataset.type=CodeIdDataset \\
        train_dataloader.dataset.cache=FILE.npz ... data_preprocessor.type=CodeIdDataPreprocessor

(``tools/run_demo.py`` does this for the demo's cls_token run).
"""
import argparse
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmengine.config import Config, DictAction  # noqa: E402

from mmaddp.datasets import encode_training_views  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='classification config with model.backbone.token_input')
    parser.add_argument('--out', required=True, help='output .npz file')
    parser.add_argument('--views', type=int, default=None,
                        help='augmented views per image (default: passes of the schedule)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the augmentation draws')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config keys, as in tools/train.py')
    args = parser.parse_args()
    if not osp.isfile(args.config):
        parser.error(f'no config file at {args.config}')
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    start = time.time()
    info = encode_training_views(cfg, args.out, views=args.views, seed=args.seed)
    print(f'wrote {info["file"]}: {info["views"]} views x {info["images"]} images, grid '
          f'{info["grid"]}, in {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
