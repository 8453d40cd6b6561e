"""Code ids of augmented training views, computed once for token-input runs.

A classifier that reads the frozen tokenizer's code ids (``token_input``)
encodes every training batch with the tokenizer: on the demo's 2 CPU cores
that costs as much as the ViT's own training step. Its input does not depend
on the ViT being trained, so the ids of the augmented views can be computed
ahead of time (in the demo, while the token predictor and ADDP pretrain) and
the run then reads ids, not images. ``tools/dataset_converters/cache_code_ids.py``
writes the ids of ``views`` independently augmented copies of every training
image; ``CodeIdDataset`` serves them, one (image, view) pair per sample.
MMEngine and mmpretrain have no feature cache of this kind, so it is written
here.

File format (``.npz``): ``ids`` uint8/int16 V x N x h x w, ``labels`` int64
N, ``num_codes``, ``tokenizer`` (the checkpoint path the ids come from).
"""
import os.path as osp
from typing import Optional

import numpy as np
from mmengine.dataset import BaseDataset

from mmaddp.registry import DATASETS


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
        return dict(
            img=self.ids[view, image].astype(np.int64),
            gt_label=int(self.labels[image]),
            sample_idx=idx)

    def prepare_data(self, idx: int):
        return self.pipeline(self.get_data_info(idx))

    def __getitem__(self, idx: int) -> dict:
        self.full_init()
        return self.prepare_data(idx)
