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

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmaddp  # noqa: E402,F401
from mmaddp.engine.hooks import write_atomically
from mmaddp.evaluation.frozen_features import extract_features
from mmaddp.registry import MODELS
from mmaddp.utils.cli import add_frozen_encoder_arguments, check_frozen_encoder_arguments
from mmaddp.utils.config import merge_cfg_options_strict


def parse_args():
    parser = argparse.ArgumentParser(description='Linear probe of a frozen encoder')
    add_frozen_encoder_arguments(parser, 'probe')
    parser.add_argument('--train-per-class', type=int, default=300)
    parser.add_argument('--C', type=float, default=0.1, help='inverse L2 strength')
    parser.add_argument(
        '--features',
        choices=['tokens', 'pooled'],
        default='tokens',
        help='tokens: the class token and every patch token, flattened; '
        'pooled: the class token and the mean patch token')
    args = parser.parse_args()
    check_frozen_encoder_arguments(parser, args)
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


def pooled(tokens: torch.Tensor) -> torch.Tensor:
    """B x (1 + N) x C tokens -> B x 2C: the class token and the mean patch token."""
    return torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=1)


def main():
    args = parse_args()
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        merge_cfg_options_strict(cfg, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    encoder = build_encoder(cfg, args.checkpoint, args.seed)
    reduce = pooled if args.features == 'pooled' else None
    x_train, y_train = (
        t.numpy() for t in extract_features(cfg, encoder, 'train', args.train_per_class, reduce))
    x_val, y_val = (t.numpy() for t in extract_features(cfg, encoder, 'val', reduce=reduce))
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
        write_atomically(args.out, json.dumps(result, indent=2))


if __name__ == '__main__':
    main()
