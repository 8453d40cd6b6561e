"""Weighted k-NN classification on a frozen encoder's features.

    python tools/analysis_tools/knn_eval.py CONFIG (CHECKPOINT | --random)
        [--k 20 200] [--temperature 0.07] [--out knn.json]

CONFIG is a classification config with an ``ADDPViT`` backbone (a linear-
probe config, e.g. ``configs/linear_probe/*.py``, gives the probe's
features: the pooled patch tokens). Its backbone, as configured, encodes the
train and val splits once through the test pipeline; each val image takes
the labels of its ``k`` most cosine-similar train images, weighted by
``exp(similarity / T)``. CHECKPOINT is an ADDP / mmaddp checkpoint of the
encoder (it replaces the config's ``init_cfg``); ``--random`` keeps the
encoder at its initialisation from scratch. Prints and writes
``{"k20/top1": ..., ...}``.
"""
import argparse
import json
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmaddp  # noqa: F401
from mmaddp.engine.hooks import write_atomically
from mmaddp.evaluation.frozen_features import extract_features, knn_accuracy
from mmaddp.registry import MODELS
from mmaddp.utils import check_image_loading, exit_on_bad_input, merge_cfg_options_strict
from mmaddp.utils.cli import add_frozen_encoder_arguments, check_frozen_encoder_arguments


def parse_args():
    parser = argparse.ArgumentParser(description='Weighted k-NN on frozen features')
    add_frozen_encoder_arguments(parser, 'classify with')
    parser.add_argument('--k', type=int, nargs='+', default=[20, 200], help='neighbours')
    parser.add_argument('--temperature', type=float, default=0.07)
    args = parser.parse_args()
    check_frozen_encoder_arguments(parser, args)
    return args


def main():
    args = parse_args()
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'Config file not found: {args.config}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        merge_cfg_options_strict(cfg, args.cfg_options)
    check_image_loading(cfg)  # a corrupt image stops with its path
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    backbone = cfg.model.backbone.copy()
    if backbone.get('type') != 'ADDPViT':
        raise ValueError(f'{args.config}: k-NN needs an ADDPViT backbone, got '
                         f'{backbone.get("type")!r}')
    backbone.update(
        drop_path_rate=0.0,
        init_cfg=None if args.random else dict(type='Pretrained', checkpoint=args.checkpoint))
    torch.manual_seed(args.seed)
    encoder = MODELS.build(backbone)
    encoder.init_weights()
    encoder.eval()
    x_train, y_train = extract_features(cfg, encoder, 'train')
    x_val, y_val = extract_features(cfg, encoder, 'val')
    num_classes = cfg.model.head.num_classes
    result = knn_accuracy(x_train, y_train, x_val, y_val, num_classes, args.k, args.temperature)
    result.update(
        train_images=len(y_train),
        val_images=len(y_val),
        dims=int(x_train.shape[1]),
        temperature=args.temperature,
        encoder='random' if args.random else args.checkpoint)
    print(json.dumps(result))
    if args.out:
        write_atomically(args.out, json.dumps(result, indent=2))


if __name__ == '__main__':
    exit_on_bad_input(main)
