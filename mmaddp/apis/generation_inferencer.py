"""Unconditional generation through MMEngine's ``BaseInferencer``.

The recognition models run through their repositories' own inferencers
(mmpretrain's ``ImageClassificationInferencer``, mmdet's ``DetInferencer``,
mmseg's ``MMSegInferencer``); none of them generates, so this one does, with
the same workflow (``__call__`` -> preprocess -> forward -> visualize ->
postprocess) and the same result dict (``predictions``, ``visualization``).
"""
import os
import os.path as osp
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.infer import BaseInferencer
from mmengine.registry import init_default_scope

from mmaddp.checkpoint import filter_state_dict, read_state_dict
from mmaddp.registry import MODELS
from mmaddp.utils.generation import iter_batches, sample_seed, to_uint8

#: the samplers :class:`ADDPGenerationInferencer` can run
SAMPLERS = ('addp', 'predictor', 'start', 'noise')
#: image files ``start_from`` reads
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')


def list_start_images(folder: str) -> List[str]:
    """The image files under ``folder`` (recursive), sorted: sample ``i``
    of a release-start run starts from entry ``i % len``."""
    from mmengine.utils import scandir
    if not osp.isdir(folder):
        raise FileNotFoundError(f'start_from folder not found: {folder}')
    files = sorted(
        osp.join(folder, f)
        for f in scandir(folder, IMAGE_SUFFIXES, recursive=True, case_sensitive=False))
    if not files:
        raise ValueError(f'start_from folder {folder} holds no image ({", ".join(IMAGE_SUFFIXES)})')
    return files


def read_start_image(path: str) -> torch.Tensor:
    """One start image, 3 x H x W float RGB in [0, 1]."""
    import mmcv
    try:
        image = mmcv.imread(path, channel_order='rgb')
    except Exception as e:  # cv2 / PIL raise various types for corrupt files
        raise ValueError(f'start image {path} cannot be read: {e}') from None
    if image is None:
        raise ValueError(f'start image {path} cannot be read')
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1).float() / 255


def build_generator(cfg: Config, checkpoint: str, device) -> torch.nn.Module:
    """Build ``cfg.model`` (an ADDP model), load ``checkpoint``, eval mode.

    Raises:
        ValueError: the model cannot generate, the checkpoint misses trained
            weights, or a frozen part (tokenizer, token predictor) has
            weights neither in the config nor in the checkpoint.
    """
    # mapped, not read: refuses a missing or unreadable file before anything is
    # built, and its keys serve the frozen-part check below
    mapped = read_state_dict(checkpoint, mmap=True)
    model_cfg = cfg.get('model', None)
    if not model_cfg:
        raise ValueError(f'Config {cfg.filename} has no model')
    model = MODELS.build(model_cfg)
    if not callable(getattr(model, 'generate', None)) or not hasattr(model, 'load_checkpoint'):
        raise ValueError(f'The model of {cfg.filename} ({type(model).__name__}) cannot generate; '
                         'generation needs an ADDP config')
    result = model.load_checkpoint(checkpoint)  # refuses other kinds of checkpoint
    if result.missing_keys:
        raise ValueError(f'Checkpoint {checkpoint} lacks trained ADDP weights, e.g. '
                         f'{result.missing_keys[:5]} ({len(result.missing_keys)} missing)')
    unset = [
        p for p in ('tokenizer', 'token_predictor')
        if isinstance(model_cfg.get(p), dict) and not model_cfg[p].get('checkpoint')
    ]
    if unset:  # then the checkpoint has to carry them
        state = filter_state_dict(mapped, 'addp', f'Checkpoint {checkpoint}')
        lacking = [p for p in unset if not any(k.startswith(p + '.') for k in state)]
        if lacking:
            raise ValueError(
                f'No weights for {lacking}: the config sets no checkpoint for them and '
                f'{checkpoint} carries none. Set model.<part>.checkpoint in the config or '
                'with --cfg-options.')
    return model.to(device).eval()


def build_predictor_sampler(cfg: Config, device) -> torch.nn.Module:
    """The config's frozen token predictor with its tokenizer attached, for
    MAGE-style sampling (``sampler='predictor'``); both need checkpoints in
    the config."""
    model_cfg = cfg.get('model', None) or {}
    missing = [
        p for p in ('tokenizer', 'token_predictor')
        if not isinstance(model_cfg.get(p), dict) or not model_cfg[p].get('checkpoint')
    ]
    if missing:
        raise ValueError(f'the predictor sampler needs model.<part>.checkpoint for {missing} in '
                         f'{cfg.filename} (set them with --cfg-options)')
    predictor = MODELS.build(
        dict(model_cfg['token_predictor'], tokenizer=model_cfg['tokenizer'], frozen=True))
    return predictor.to(device).eval()


class ReferenceSampler(torch.nn.Module):
    """``generate`` of the two FID reference points: ADDP's start image for
    every sample (``kind='start'``) or uniform noise of its size, drawn from
    each sample's own seed (``kind='noise'``)."""

    def __init__(self, addp: torch.nn.Module, kind: str):
        super().__init__()
        self.start = addp.start_pixels().float().clamp(0, 1)
        self.kind = kind

    @torch.no_grad()
    def generate(self, num_samples: int, seeds, **kwargs) -> torch.Tensor:
        if self.kind == 'start':
            return self.start.expand(num_samples, -1, -1, -1)
        return torch.stack([
            torch.rand(self.start.shape[1:], generator=torch.Generator().manual_seed(int(s)))
            for s in seeds
        ])


class ADDPGenerationInferencer(BaseInferencer):
    """Generate images with an ADDP config + checkpoint.

    Inputs are sample *indices*: ``inferencer(16)`` makes samples 0-15,
    ``inferencer([3, 7])`` samples 3 and 7. Sample ``i`` is made from its own
    seed (:func:`~mmaddp.utils.generation.sample_seed` of ``seed`` and
    ``i``), so it does not depend on the batch size, on the other indices of
    the call or on how many processes share a run (``tools/generate.py``
    deals indices over ranks).

    Example:
        >>> inferencer = ADDPGenerationInferencer(
        ...     'configs/addp/addp_vit-nano-p4_1xb64-1000i_demo.py', 'iter_1000.pth')
        >>> result = inferencer(16, batch_size=8, steps=8, out_dir='samples')
        >>> result['predictions'][0]['image'].shape  # H x W x 3 uint8
        (32, 32, 3)

    Args:
        model (str | Config): an ADDP config (path or object).
        weights (str): an ADDP checkpoint (mmaddp or released layout); unused
            with ``sampler='predictor'``.
        device (str | torch.device, optional): defaults to MMEngine's choice.
        scope (str): the registry scope ADDP lives in. Defaults to 'mmpretrain'.
        sampler (str): 'addp' (alternate decode and predict), 'predictor'
            (the frozen token predictor alone, MAGE-style, same sampler and
            seeds), 'start' / 'noise' (the start image / uniform noise, FID
            reference points). Defaults to 'addp'.
        show_progress (bool): show a progress bar per call. Defaults to True.
        start_from (str, optional): a folder of images at the model's image
            size (e.g. the val split): sample ``i`` starts from its ``i``-th
            image (sorted, recursive, cycling), the authors' released
            generation protocol (``ADDP.generate(start_images=...)``; data
            enters the samples). ``sampler='addp'`` only. Defaults to None
            (the decode of the fully masked state, no data read).

    Call keywords: ``seed`` (base seed, 0); ``steps`` (20), ``schedule``
    ('cosine'), ``temperature`` (6.0), ``temperature_decay`` (True),
    ``top_p`` (None) as in ``ADDP.generate``; ``out_dir`` (write each sample
    as ``NNNNNN.png`` there, default: nothing written), ``grid`` (also write
    ``grid.png`` of the call's samples, True), ``nrow`` (8).

    Returns (from ``__call__``):
        dict: ``predictions``, a list of ``dict(index, seed, image)`` with
        ``image`` an H x W x 3 uint8 array (RGB), and ``visualization``, a
        list holding the grid of the call's samples (uint8 H x W x 3).
    """
    preprocess_kwargs = {'seed'}
    forward_kwargs = {'steps', 'schedule', 'temperature', 'temperature_decay', 'top_p'}
    visualize_kwargs = {'out_dir', 'grid', 'nrow'}
    postprocess_kwargs = set()

    def __init__(self,
                 model: Union[str, Config],
                 weights: Optional[str] = None,
                 device=None,
                 scope: str = 'mmpretrain',
                 sampler: str = 'addp',
                 show_progress: bool = True,
                 start_from: Optional[str] = None) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f'unknown sampler {sampler!r}; choose one of {SAMPLERS}')
        if start_from is not None and sampler != 'addp':
            raise ValueError(f"start_from is a start of ADDP's sampler, not of {sampler!r}")
        self.start_files = list_start_images(start_from) if start_from is not None else None
        if sampler != 'predictor' and not weights:
            raise ValueError(f'sampler {sampler!r} needs the ADDP checkpoint (weights)')
        if isinstance(model, str) and not osp.isfile(model):
            raise FileNotFoundError(f'Config file not found: {model}')
        self.sampler = sampler
        init_default_scope(scope)
        super().__init__(model, weights, device, scope, show_progress)

    def _init_model(self, cfg, weights, device) -> torch.nn.Module:
        device = torch.device(device) if device is not None else torch.device('cpu')
        if self.sampler == 'predictor':
            return build_predictor_sampler(cfg, device)
        model = build_generator(cfg, weights, device)
        return ReferenceSampler(model, self.sampler) if self.sampler != 'addp' else model

    def _init_pipeline(self, cfg):
        return None  # indices need no transforms; :meth:`preprocess` seeds them

    def _inputs_to_list(self, inputs) -> List[int]:
        if isinstance(inputs, (int, np.integer)) and not isinstance(inputs, bool):
            inputs = range(int(inputs))
        if not isinstance(inputs, (list, tuple, range)) or not all(
                isinstance(i, (int, np.integer)) and i >= 0 for i in inputs):
            raise ValueError('inputs are a number of samples or a list of sample indices '
                             f'(ints >= 0), got {inputs!r}')
        return [int(i) for i in inputs]

    def preprocess(self, inputs: Sequence[int], batch_size: int = 1, seed: int = 0):
        """Yield ``dict(indices, seeds)`` per batch, with ``start`` (B x 3 x
        H x W) where ``start_from`` is set."""
        for batch in iter_batches(inputs, batch_size):
            item = dict(indices=batch, seeds=[sample_seed(seed, i) for i in batch])
            if self.start_files is not None:
                files = [self.start_files[i % len(self.start_files)] for i in batch]
                images = [read_start_image(f) for f in files]
                for f, image in zip(files, images):
                    if image.shape != images[0].shape:
                        raise ValueError(f'start image {f} is {tuple(image.shape[1:])}, '
                                         f'{files[0]} {tuple(images[0].shape[1:])}: one size')
                item['start'] = torch.stack(images)
            yield item

    @torch.no_grad()
    def forward(self,
                inputs: dict,
                steps: int = 20,
                schedule: str = 'cosine',
                temperature: float = 6.0,
                temperature_decay: bool = True,
                top_p: Optional[float] = None) -> List[dict]:
        """Generate one batch: a list of ``dict(index, seed, image)``, image
        3 x H x W float in [0, 1] on the CPU."""
        images = self.model.generate(
            len(inputs['indices']),
            seeds=inputs['seeds'],
            steps=steps,
            schedule=schedule,
            temperature=temperature,
            temperature_decay=temperature_decay,
            top_p=top_p,
            **({} if 'start' not in inputs else dict(start_images=inputs['start']))).float().cpu()
        return [
            dict(index=i, seed=s, image=image)
            for i, s, image in zip(inputs['indices'], inputs['seeds'], images)
        ]

    def visualize(self,
                  inputs: list,
                  preds: List[dict],
                  out_dir: str = '',
                  grid: bool = True,
                  nrow: int = 8) -> List[np.ndarray]:
        """Write the samples to ``out_dir`` (``NNNNNN.png``, and ``grid.png``
        with ``grid``) and return ``[grid image]`` (uint8 H x W x 3)."""
        from torchvision.utils import make_grid, save_image
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            for pred in preds:
                save_image(pred['image'], osp.join(out_dir, f"{pred['index']:06d}.png"))
        if not preds:
            return []
        picture = make_grid(torch.stack([p['image'] for p in preds]), nrow=nrow, padding=2)
        if out_dir and grid:
            save_image(picture, osp.join(out_dir, 'grid.png'))
        return [to_uint8(picture).permute(1, 2, 0).numpy()]

    def postprocess(self,
                    preds: List[dict],
                    visualization: List[np.ndarray],
                    return_datasamples: bool = False) -> dict:
        """``dict(predictions=[dict(index, seed, image uint8 H x W x 3)],
        visualization=[grid])``; with ``return_datasamples`` the images stay
        3 x H x W float tensors in [0, 1]."""
        if not return_datasamples:
            preds = [dict(p, image=to_uint8(p['image']).permute(1, 2, 0).numpy()) for p in preds]
        return dict(predictions=preds, visualization=visualization)
