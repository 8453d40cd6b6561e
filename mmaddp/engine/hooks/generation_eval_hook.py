"""FID / IS of ADDP samples during training, logged like any other scalar.

The hook samples with ``ADDP.generate`` (sharded over ranks, one seed per
sample), scores the samples against a reference folder or dataloader with
:mod:`mmaddp.evaluation.generation_metrics` and logs ``fid`` / ``is`` and a
sample grid through the runner's visualizer. ``docs/generation.md`` shows a
config block that turns it on.
"""
import math
from itertools import chain
from typing import Optional, Union

import numpy as np
import torch
from mmengine.dist import all_gather_object, broadcast_object_list, get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS as MMENGINE_HOOKS

from mmaddp.registry import HOOKS
from mmaddp.utils.generation import generate_indexed, shard_indices, to_uint8

DataLoaderCfg = Union[dict, torch.utils.data.DataLoader]


class GenerationEvalHook(Hook):
    """Every ``interval`` iterations (or epochs) generate ``num_samples``
    images with the model being trained, compute their FID and IS against a
    reference set, log them and show a grid of the samples.

    Samples are spread over the ranks exactly as in ``tools/generate.py``
    (sample i from its own seed derived from ``seed`` and i), so the same
    weights give the same samples whatever the number of processes; the
    images are gathered on rank 0, which computes the metrics.

    The metrics go to the message hub (``{prefix}/fid``, ``{prefix}/is_mean``,
    ``{prefix}/is_std``), the log, and ``runner.visualizer.add_scalars`` (so
    every configured backend -- ``scalars.json`` of ``LocalVisBackend``,
    TensorBoard, ... -- records them at the training step); the grid goes to
    ``runner.visualizer.add_image`` as ``{prefix}_grid``.

    Args:
        feature_net (dict): the feature network, as
            :func:`mmaddp.evaluation.generation_metrics.build_feature_net`
            takes it: ``dict(type='inception', weights_path=...)`` or
            ``dict(type='classifier', config=..., checkpoint=..., is_splits=1)``.
        ref_dir (str, optional): folder of reference images (recursive).
        ref_dataloader (dict | DataLoader, optional): reference images from a
            dataloader, put through the model's data preprocessor (for ADDP:
            RGB in [0, 1]); read once before training, gathered on rank 0.
            Exactly one of ``ref_dir`` and ``ref_dataloader`` is needed.
        ref_num_images (int, optional): use at most this many reference
            images of the dataloader.
        interval (int): evaluate every this many iterations / epochs.
        by_epoch (bool): count ``interval`` in epochs.
        eval_after_train (bool): evaluate at the end of training unless that
            step was just evaluated.
        num_samples, batch_size, steps, schedule, temperature,
        temperature_decay, top_p, seed: the generation (``ADDP.generate``);
            ``batch_size`` is per rank.
        grid_size (int), nrow (int): the first ``grid_size`` samples are shown,
            ``nrow`` per row.
        prefix (str): name prefix of the scalars and the image.
    """

    priority = 'LOW'

    def __init__(self,
                 feature_net: dict,
                 ref_dir: Optional[str] = None,
                 ref_dataloader: Optional[DataLoaderCfg] = None,
                 ref_num_images: Optional[int] = None,
                 interval: int = 1000,
                 by_epoch: bool = False,
                 eval_after_train: bool = True,
                 num_samples: int = 64,
                 batch_size: int = 16,
                 steps: int = 20,
                 schedule: str = 'cosine',
                 temperature: float = 6.0,
                 temperature_decay: bool = True,
                 top_p: Optional[float] = None,
                 seed: int = 0,
                 grid_size: int = 64,
                 nrow: int = 8,
                 prefix: str = 'generation'):
        if (ref_dir is None) == (ref_dataloader is None):
            raise ValueError('GenerationEvalHook needs exactly one of ref_dir and ref_dataloader')
        if not isinstance(feature_net, dict) or 'type' not in feature_net:
            raise ValueError("feature_net must be a dict with type='inception' or 'classifier'")
        if interval < 1 or num_samples < 2:
            raise ValueError(f'need interval >= 1 and num_samples >= 2 (a covariance), got '
                             f'{interval} and {num_samples}')
        self.feature_net_cfg = dict(feature_net)
        self.ref_dir = ref_dir
        self.ref_dataloader = ref_dataloader
        self.ref_num_images = ref_num_images
        self.interval = interval
        self.by_epoch = by_epoch
        self.eval_after_train = eval_after_train
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.generate_kwargs = dict(
            steps=steps,
            schedule=schedule,
            temperature=temperature,
            temperature_decay=temperature_decay,
            top_p=top_p)
        self.seed = seed
        self.grid_size = grid_size
        self.nrow = nrow
        self.prefix = prefix
        self.feature_net = None
        self.reference = None
        self._last_step = None

    # ------------------------------------------------------------ set-up
    @staticmethod
    def _unwrap(model):
        return model.module if is_model_wrapper(model) else model

    def before_train(self, runner) -> None:
        from mmaddp.evaluation.generation_metrics import build_feature_net
        model = self._unwrap(runner.model)
        if not callable(getattr(model, 'generate', None)):
            raise TypeError(f'GenerationEvalHook needs a model with generate() (ADDP), got '
                            f'{type(model).__name__}')
        rank, _ = get_dist_info()
        reference = self.ref_dir
        if self.ref_dataloader is not None:  # every rank reads its share
            reference = self._reference_images(runner, model)
        if rank == 0:
            self.feature_net = build_feature_net(self.feature_net_cfg)
            self.reference = self.feature_net.prepare_reference(reference)
            runner.logger.info(f'GenerationEvalHook: {self.num_samples} samples every '
                               f'{self.interval} {"epochs" if self.by_epoch else "iterations"}, '
                               f'feature net {self.feature_net_cfg["type"]}')

    @torch.no_grad()
    def _reference_images(self, runner, model) -> Optional[torch.Tensor]:
        """uint8 reference images gathered on rank 0 (None elsewhere)."""
        from mmengine.runner import Runner
        loader = self.ref_dataloader
        if isinstance(loader, dict):
            loader = Runner.build_dataloader(loader, seed=runner.seed)
        rank, world_size = get_dist_info()
        limit = (
            math.ceil(self.ref_num_images /
                      world_size) if self.ref_num_images is not None else None)
        local, count = [], 0
        for data_batch in loader:
            inputs = model.data_preprocessor(data_batch, False)['inputs']
            if isinstance(inputs, (list, tuple)):  # SelfSupDataPreprocessor: one per view
                inputs = inputs[0]
            local.append(to_uint8(inputs.detach().float().cpu()))
            count += len(inputs)
            if limit is not None and count >= limit:
                break
        gathered = all_gather_object(torch.cat(local)[:limit] if local else None)
        if rank != 0:
            return None
        parts = [p for p in gathered if p is not None]
        if not parts:
            raise ValueError('the reference dataloader of GenerationEvalHook gave no images')
        images = torch.cat(parts)
        return images[:self.ref_num_images] if self.ref_num_images is not None else images

    # ------------------------------------------------------------ triggers
    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.by_epoch and self.every_n_train_iters(runner, self.interval):
            self.evaluate(runner, runner.iter + 1)

    def after_train_epoch(self, runner) -> None:
        if self.by_epoch and self.every_n_epochs(runner, self.interval):
            self.evaluate(runner, runner.iter)

    def after_train(self, runner) -> None:
        if self.eval_after_train and self._last_step != runner.iter:
            self.evaluate(runner, runner.iter)

    # ---------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, runner, step: int) -> dict:
        """Generate, gather on rank 0, compute and log the metrics at ``step``."""
        from torchvision.utils import make_grid
        model = self._unwrap(runner.model)
        rank, world_size = get_dist_info()
        indices = shard_indices(self.num_samples, rank, world_size)
        local = []
        for batch, images in generate_indexed(model, indices, self.seed, self.batch_size,
                                              **self.generate_kwargs):
            local += list(zip(batch, to_uint8(images)))
        gathered = all_gather_object(local)
        result = [None]
        if rank == 0:
            samples = torch.stack(
                [image for _, image in sorted(chain(*gathered), key=lambda item: item[0])])
            metrics = self.feature_net.compute_metrics(samples, self.reference)
            result = [{f'{self.prefix}/{k}': float(v) for k, v in metrics.items()}]
            grid = make_grid(samples[:self.grid_size], nrow=self.nrow, padding=2)
            runner.visualizer.add_image(
                f'{self.prefix}_grid',
                np.ascontiguousarray(grid.permute(1, 2, 0).numpy()),
                step=step)
        broadcast_object_list(result)
        scalars = result[0]
        for key, value in scalars.items():
            runner.message_hub.update_scalar(key, value)
        runner.visualizer.add_scalars(scalars, step=step)
        runner.logger.info(f'Generation at step {step} ({self.num_samples} samples): ' +
                           ', '.join(f'{k.split("/")[-1]}: {v:.4f}' for k, v in scalars.items()))
        self._last_step = step
        return scalars


# usable from any scope: mmpretrain's (ADDP configs) and MMEngine's root registry
HOOKS.register_module(module=GenerationEvalHook)
MMENGINE_HOOKS.register_module(module=GenerationEvalHook)
