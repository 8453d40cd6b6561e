"""Code ids of augmented training views, computed once for token-input runs.

A classifier that reads the frozen tokenizer's code ids (``token_input``)
encodes every training batch with the tokenizer: on the demo's 2 CPU cores
that costs as much as the ViT's own training step. Its input does not depend
on the ViT being trained, so the ids of the augmented views can be computed
ahead of time (in the demo, while the token predictor and ADDP pretrain) and
the run then reads ids, not images. ``encode_training_views`` writes the
ids of ``views`` independently augmented copies of every training image (the
run's own data preprocessor draws the augmentation; ``views`` defaults to the
number of passes the schedule makes over the data, so each augmented view is
read about once, as in the pixel run); ``CodeIdDataset`` serves them, one
(image, view) pair per sample. MMEngine and mmpretrain have no feature cache
of this kind, so it is written here.

File format (``.npz``): ``ids`` uint8/int16 V x N x h x w, ``labels`` int64
N, ``num_codes``, ``tokenizer`` (the checkpoint path the ids come from).
"""
import math
import os
import os.path as osp
from typing import Optional

import numpy as np
import torch
from mmengine.dataset import BaseDataset

from mmaddp.registry import DATASETS


def encode_training_views(cfg, out: str, views: Optional[int] = None, seed: int = 0,
                          batch_size: int = 256, log=print) -> dict:
    """Encode ``views`` augmented copies of the training set of ``cfg`` (a
    classification config whose backbone has ``token_input``); write ``out``.

    The images go through the config's training pipeline once, then, per view,
    through its data preprocessor in training mode (normalisation and batch
    augments) and the backbone's pixels -> code ids mapping
    (``CodeTokenEmbed.code_ids``, frozen tokenizer). The ViT itself is not
    built. Written to ``out.tmp.npz`` and renamed, so an interrupted run leaves
    no ``out``; the caller's torch random stream is left as it was.
    """
    from mmengine.registry import init_default_scope

    token_input = cfg.model.backbone.get('token_input')
    if not token_input:
        raise ValueError('encode_training_views needs a config whose model.backbone.token_input '
                         'names the tokenizer; this one reads pixels')
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    generator_state = torch.random.get_rng_state()
    try:
        return _encode(cfg, token_input, out, views, seed, batch_size, log)
    finally:
        torch.random.set_rng_state(generator_state)


def _encode(cfg, token_input, out, views, seed, batch_size, log) -> dict:
    from mmpretrain.registry import MODELS

    from mmaddp.models.backbones.code_token_embed import CodeTokenEmbed

    # the run's data preprocessor (the classifier's default type when unnamed)
    pre_cfg = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    preprocessor = MODELS.build(dict(dict(type='ClsDataPreprocessor'), **pre_cfg))
    embed = CodeTokenEmbed(embed_dims=1, patch_size=cfg.model.backbone.patch_size, **token_input)

    loader_cfg = cfg.train_dataloader
    dataset = DATASETS.build(loader_cfg.dataset)
    n = len(dataset)
    if views is None:
        views = math.ceil(cfg.train_cfg.max_iters * loader_cfg.batch_size / n)
    if views < 1:
        raise ValueError(f'views must be >= 1, got {views}')
    # the training pipeline's output (decoded, unaugmented images), held once
    items = [dataset[i] for i in range(n)]
    images = torch.stack([item['inputs'] for item in items])
    samples = [item['data_samples'] for item in items]
    labels = np.array([int(sample.gt_label[0]) for sample in samples], np.int64)
    dtype = np.uint8 if embed.num_codes <= 256 else np.int16
    ids = None
    torch.manual_seed(seed)
    with torch.no_grad():
        for view in range(views):
            for start in range(0, n, batch_size):
                data = dict(inputs=images[start:start + batch_size],
                            data_samples=samples[start:start + batch_size])
                codes = embed.code_ids(preprocessor(data, training=True)['inputs']).numpy()
                if ids is None:
                    ids = np.empty((views, n) + codes.shape[1:], dtype)
                ids[view, start:start + len(codes)] = codes
            log(f'progress: code ids of view {view + 1}/{views} ({n} images) encoded')
    tmp = out + '.tmp.npz'  # np.savez appends .npz to names without it
    np.savez(tmp, ids=ids, labels=labels, num_codes=embed.num_codes,
             tokenizer=str(token_input['tokenizer'].get('checkpoint')))
    os.replace(tmp, out)
    return dict(file=out, views=views, images=n, grid=list(ids.shape[2:]))


@DATASETS.register_module()
class CodeIdDataset(BaseDataset):
    """The training set of a token-input run, read from an
    ``encode_training_views`` file: sample ``v * N + i`` is view ``v`` of
    image ``i``, as ``img`` = code ids h x w (int64) and ``gt_label``.

    Pair it with ``CodeIdDataPreprocessor`` (ids pass through unnormalised)
    and ``PackInputs`` in the pipeline.

    Args:
        cache (str): the ``.npz`` file.
        num_codes (int, optional): the reading model's codebook size; a cache
            from a tokenizer with another codebook is refused.
        pipeline (list): transforms after loading (``PackInputs``).
    """

    METAINFO = dict(classes=None)

    def __init__(self, cache: str, num_codes: Optional[int] = None, pipeline=(), **kwargs):
        self.cache = cache
        self.expected_codes = num_codes
        super().__init__(ann_file='', pipeline=list(pipeline), lazy_init=True, **kwargs)

    def full_init(self):
        if self._fully_initialized:
            return
        if not osp.isfile(self.cache):
            raise FileNotFoundError(f'CodeIdDataset: no code-id cache at {self.cache} '
                                    '(write it with tools/dataset_converters/cache_code_ids.py)')
        try:
            with np.load(self.cache) as f:
                self.ids, self.labels = f['ids'], f['labels']
                num_codes = int(f['num_codes'])
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f'CodeIdDataset: {self.cache} is not a code-id cache '
                             f'(ids, labels, num_codes): {e}') from e
        if self.ids.ndim != 4 or self.ids.shape[1] != len(self.labels):
            raise ValueError(f'CodeIdDataset: {self.cache} holds ids of shape {self.ids.shape} '
                             f'for {len(self.labels)} labels; expected views x N x h x w')
        if self.expected_codes is not None and num_codes != self.expected_codes:
            raise ValueError(f'CodeIdDataset: {self.cache} holds ids of a {num_codes}-code '
                             f'tokenizer; the model reads {self.expected_codes} codes')
        self._fully_initialized = True

    def __len__(self) -> int:
        self.full_init()
        return self.ids.shape[0] * self.ids.shape[1]

    def get_data_info(self, idx: int) -> dict:
        view, image = divmod(int(idx), self.ids.shape[1])
        return dict(img=self.ids[view, image].astype(np.int64), gt_label=int(self.labels[image]),
                    sample_idx=idx)

    def prepare_data(self, idx: int):
        return self.pipeline(self.get_data_info(idx))

    def __getitem__(self, idx: int) -> dict:
        self.full_init()
        return self.prepare_data(idx)
