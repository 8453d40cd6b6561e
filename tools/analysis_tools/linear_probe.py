"""Linear probe of a frozen ADDP encoder: logistic regression on its tokens.

    python tools/analysis_tools/linear_probe.py CLS_CONFIG (CHECKPOINT | --random)
        [--train-per-class 300] [--out probe.json]

The classification config gives the backbone and the train / val data (the
test pipeline for both: no augmentation). The encoder (``ADDPViT`` with
``out_type='raw'`` and its final LayerNorm, as pretraining computes it) reads
every image once; the class token and all patch tokens are flattened and
standardised, and scikit-learn's multinomial ``LogisticRegression`` is fitted
on ``--train-per-class`` images per class (the first ones of each class in
file order) and scored on the whole val split. Nothing is fine-tuned. A
closed-form convex fit of cached features is seconds on a CPU where an SGD
linear head through a runner would be minutes, hence scikit-learn.
Writes ``{"top1": ..., "train_images": ..., "features": ...}``.
"""
import argparse
import json
import os
import os.path as osp

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmaddp  # noqa: E402,F401
from mmaddp.registry import MODELS
from mmaddp.utils.config import merge_cfg_options_strict


def parse_args():
    parser = argparse.ArgumentParser(description='Linear probe of a frozen encoder')
    parser.add_argument('config', help='a classification config with an ADDPViT backbone')
    parser.add_argument('checkpoint', nargs='?', help='ADDP / mmaddp checkpoint of the encoder')
    parser.add_argument(
        '--random',
        action='store_true',
        help='probe the encoder at its initialisation from scratch')
    parser.add_argument('--train-per-class', type=int, default=300)
    parser.add_argument('--C', type=float, default=0.1, help='inverse L2 strength')
    parser.add_argument(
        '--features',
        choices=['tokens', 'pooled'],
        default='tokens',
        help='tokens: the class token and every patch token, flattened; '
        'pooled: the class token and the mean patch token')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random init')
    parser.add_argument('--out', help='write the result as JSON here')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config (key=value; unknown keys refused)')
    args = parser.parse_args()
    if (args.checkpoint is None) == (not args.random):
        parser.error('give a CHECKPOINT or --random (one of them)')
    if args.checkpoint is not None and not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint file not found: {args.checkpoint}')
    return args


def build_encoder(cfg: Config, checkpoint, seed: int) -> torch.nn.Module:
    backbone = cfg.model.backbone.copy()
    if backbone.get('type') != 'ADDPViT':
        raise ValueError(f'{cfg.filename}: the linear probe needs an ADDPViT backbone, '
                         f'got {backbone.get("type")!r}')
    backbone.update(
        out_type='raw',
        final_norm=True,
        drop_path_rate=0.0,
        frozen_stages=-1,
        init_cfg=None if checkpoint is None else dict(type='Pretrained', checkpoint=checkpoint))
    torch.manual_seed(seed)
    encoder = MODELS.build(backbone)
    encoder.init_weights()
    return encoder.eval()


@torch.no_grad()
def extract(cfg: Config, encoder, split: str, per_class=None, features='tokens'):
    """(features N x D, labels N) of one split, through the config's test
    pipeline and data preprocessor."""
    loader_cfg = cfg.test_dataloader.copy()
    loader_cfg['dataset'] = dict(loader_cfg['dataset'], data_prefix=split)
    loader_cfg.update(persistent_workers=False)
    dataset = Runner.build_dataloader(loader_cfg).dataset
    if per_class is not None:  # the first per_class images of every class
        picked, seen = [], {}
        for i in range(len(dataset)):
            label = int(dataset.get_data_info(i)['gt_label'])
            if seen.get(label, 0) < per_class:
                seen[label] = seen.get(label, 0) + 1
                picked.append(i)
        loader_cfg['dataset'] = dict(loader_cfg['dataset'], indices=picked)
    loader = Runner.build_dataloader(loader_cfg)
    preprocessor = dict(cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {})
    preprocessor.setdefault('type', 'ClsDataPreprocessor')  # ImageClassifier's default
    preprocessor = MODELS.build(preprocessor)
    feats, labels = [], []
    for batch in loader:
        data = preprocessor(batch, False)
        out = encoder(data['inputs'])[-1]  # B x (1 + N) x C
        if features == 'pooled':
            out = torch.cat([out[:, 0], out[:, 1:].mean(1)], dim=1)
        feats.append(out.flatten(1).float().numpy())
        labels += [int(s.gt_label) for s in data['data_samples']]
    return np.concatenate(feats), np.array(labels)


def main():
    args = parse_args()
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        merge_cfg_options_strict(cfg, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    encoder = build_encoder(cfg, args.checkpoint, args.seed)
    x_train, y_train = extract(cfg, encoder, 'train', args.train_per_class, args.features)
    x_val, y_val = extract(cfg, encoder, 'val', features=args.features)
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(C=args.C, max_iter=2000)
    clf.fit(scaler.transform(x_train), y_train)
    top1 = 100.0 * float((clf.predict(scaler.transform(x_val)) == y_val).mean())
    result = dict(
        top1=top1,
        train_images=len(y_train),
        val_images=len(y_val),
        features=args.features,
        dims=int(x_train.shape[1]),
        C=args.C,
        encoder='random' if args.random else args.checkpoint)
    print(json.dumps(result))
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out + '.tmp', 'w') as f:
            json.dump(result, f, indent=2)
        os.replace(args.out + '.tmp', args.out)


if __name__ == '__main__':
    main()
