"""ADDP pretraining: the alternating denoising process as an MMEngine model."""
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmpretrain.models.selfsup import BaseSelfSupervisor
from torch.nn.modules.module import _IncompatibleKeys

from mmaddp.checkpoint import load_state_into, read_state_dict
from mmaddp.registry import MODELS
from ..diffusion import (MaskRatioSchedule, corrupt, eval_mode, fully_masked_pixels,
                         make_generators, mix_code_vectors, sample_ids)
from ..layers import FrozenPartsMixin, init_table_from_codebook
from ..utils.data_preprocessor import IMAGENET_MEAN_255, IMAGENET_STD_255, UNIT_RANGE_PREPROCESSOR

#: see ``ADDP``'s ``frozen_precision``
FROZEN_PRECISIONS = ('autocast', 'fp32', 'bf16', 'bf16_all', 'auto')


@MODELS.register_module()
class ADDP(FrozenPartsMixin, BaseSelfSupervisor):
    """ADDP: an ``ADDPViT`` encoder (``backbone``) reads pixels decoded from
    partly unreliable VQ tokens; a ``TokenDecoder`` (``neck``) predicts the
    token predictor's next-step distribution; ``DenoisingHead`` (``head``)
    gives the loss. The ``tokenizer`` and ``token_predictor`` are frozen:
    built from config, loaded from their checkpoints, run without gradient
    and held outside the module tree (:class:`~mmaddp.models.layers.FrozenPartsMixin`),
    so they stay out of the optimizer, the gradient norm, DDP and the
    checkpoints. The forward process is :func:`~mmaddp.models.diffusion.corrupt`,
    generation the sampler of :mod:`mmaddp.models.diffusion.sampler`.

    Reference: Tian et al., "ADDP: Learning General Representations for
    Image Recognition and Generation with Alternating Denoising Diffusion
    Process", ICLR 2024.

    Args:
        backbone (dict): the ``ADDPViT`` encoder (``out_type='raw'``).
        neck (dict): the ``TokenDecoder``.
        head (dict): the ``DenoisingHead``.
        tokenizer (dict): a ``VQTokenizer`` config (with ``checkpoint``).
        token_predictor (dict): a ``TokenPredictor`` config (with ``checkpoint``).
        mask_schedule (dict, optional): ``MaskRatioSchedule`` arguments.
            Defaults to None (the release's schedule).
        frozen_precision (str): how the frozen parts compute.
            ``'autocast'``: as the surrounding autocast says (an AMP /
            ``CPUBf16OptimWrapper`` runs their convolutions and matmuls in
            bf16). ``'fp32'``: fp32 whatever the autocast, the tokenizer
            channels-last. ``'bf16'``: the tokenizer's encoder fp32
            channels-last (its ids are the fp32 ids), its decoder and the
            token predictor in bf16 (the decoder channels-last).
            ``'bf16_all'``: the tokenizer's encoder in bf16 channels-last
            too: the fastest step where the code ids need not be the fp32
            ones (a bf16 encoder moves about 2 % of them, as ``'autocast'``
            under a bf16 autocast does, but without casting the frozen
            weights at every step). The nearest-code search is fp32 in
            every mode. ``'auto'``: ``'bf16'``
            where the device has bf16 arithmetic (a CUDA GPU that supports
            it, a CPU reporting ``avx512_bf16`` / ``amx_bf16``), else
            ``'fp32'``; decided again when the model moves. Defaults to
            ``'autocast'``. Measurements: ``benchmarks/results/pretrain_step.md``.
        codebook_token_table (bool): start the code rows of the decoder's
            token table (``neck.token_emb``) from the tokenizer's code
            vectors (:func:`~mmaddp.models.layers.init_table_from_codebook`),
            at the std its initialiser gave them. Not the release (normal
            (0.02) rows); at small widths the detached table of the MLM layer
            otherwise never learns what the codes look like and the decoder
            fits the targets slowly (docs/demo_schedules.md). A
            ``checkpoint`` replaces the rows. Defaults to False.
        checkpoint (str, optional): a released ``addp-vit-*-16.pth`` or an
            mmaddp ADDP checkpoint to start from. Defaults to None.
        data_preprocessor (dict, optional): Defaults to None (uint8 BGR ->
            RGB in [0, 1], the tokenizer's input).
        init_cfg (dict, optional): Defaults to None.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 tokenizer: dict,
                 token_predictor: dict,
                 mask_schedule: Optional[dict] = None,
                 frozen_precision: str = 'autocast',
                 codebook_token_table: bool = False,
                 checkpoint: Optional[str] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        # images in [0, 1] (the tokenizer's input); the encoder normalises itself
        super().__init__(
            backbone=backbone,
            neck=neck,
            head=head,
            data_preprocessor=data_preprocessor or dict(UNIT_RANGE_PREPROCESSOR),
            init_cfg=init_cfg)
        self.hold_frozen(
            tokenizer=MODELS.build(dict(tokenizer, frozen=True)),
            token_predictor=MODELS.build(dict(token_predictor, frozen=True)))
        self.mask_schedule = MaskRatioSchedule(**(mask_schedule or {}))
        # the encoder reads ImageNet-normalised pixels
        self.register_buffer('pixel_mean',
                             torch.tensor(IMAGENET_MEAN_255).view(1, 3, 1, 1) / 255, False)
        self.register_buffer('pixel_std',
                             torch.tensor(IMAGENET_STD_255).view(1, 3, 1, 1) / 255, False)
        self.num_codes = self.tokenizer.num_codes
        if self.token_predictor.codebook_size != self.num_codes:
            raise ValueError(f'token_predictor.codebook_size ({self.token_predictor.codebook_size})'
                             f' != tokenizer.num_codes ({self.num_codes})')
        if self.backbone.patch_size != self.tokenizer.downsample_factor:
            raise ValueError(f'backbone patch_size {self.backbone.patch_size} must equal the '
                             f'tokenizer downsampling {self.tokenizer.downsample_factor}')
        self.codebook_token_table = codebook_token_table
        self._checkpoint = checkpoint
        if frozen_precision not in FROZEN_PRECISIONS:
            raise ValueError(f'frozen_precision must be one of {FROZEN_PRECISIONS}, got '
                             f'{frozen_precision!r}')
        self.frozen_precision = frozen_precision
        self._set_frozen_format()

    @property
    def tokenizer(self):
        """The frozen ``VQTokenizer``."""
        return self.frozen_part('tokenizer')

    @property
    def token_predictor(self):
        """The frozen ``TokenPredictor``."""
        return self.frozen_part('token_predictor')

    def frozen_parts_moved(self):
        self._start_pixels_cache = None  # recomputed on the new device / dtype
        if hasattr(self, 'frozen_precision'):
            self._set_frozen_format()

    def _set_frozen_format(self):
        """Put the frozen parts in the format ``frozen_precision`` asks for on
        the model's current device (``'autocast'`` leaves them as moved)."""
        if self.frozen_precision == 'autocast':
            self._frozen_mode = 'autocast'
            return
        mode = self.frozen_precision
        if mode == 'auto':
            device = self.pixel_mean.device
            fast = False
            if device.type == 'cuda':
                fast = torch.cuda.is_bf16_supported()
            elif device.type == 'cpu':
                from mmaddp.engine.optimizers.cpu_bf16_optim_wrapper import cpu_has_fast_bf16
                fast = cpu_has_fast_bf16()
            mode = 'bf16' if fast else 'fp32'
        low = torch.float32 if mode == 'fp32' else torch.bfloat16
        encoder = low if mode == 'bf16_all' else torch.float32
        self.tokenizer.set_inference_format(low, channels_last=True, encoder_dtype=encoder)
        self.token_predictor.to(low)
        self._frozen_mode = mode

    def frozen_context(self):
        """Where the frozen parts run: no autocast unless ``frozen_precision``
        is ``'autocast'`` (their own dtypes decide)."""
        if getattr(self, '_frozen_mode', 'autocast') == 'autocast':
            return nullcontext()
        return torch.autocast(self.pixel_mean.device.type, enabled=False)

    # ----------------------------------------------------------------- init
    def init_weights(self):
        """Initialise the trained parts only; the frozen ones keep their
        checkpoints. Then the decoder's code rows from the codebook where
        ``codebook_token_table``, then ``checkpoint`` if given."""
        for part in (self.backbone, self.neck, self.head):
            part.init_weights()
        if self.codebook_token_table:
            init_table_from_codebook(self.neck.token_emb.weight, self.tokenizer.codebook)
        if self._checkpoint is not None:
            self.load_checkpoint(self._checkpoint)
        self._is_init = True

    def load_checkpoint(self, path: str):
        """Load a released ``addp-vit-*-16.pth`` (``model`` key; encoder and
        decoder keys at top level, optional ``vqgan.*`` / ``token_predictor.*``
        copies of the frozen parts) or an mmaddp ADDP checkpoint.

        Returns:
            ``_IncompatibleKeys``: missing / unexpected keys of the model and
            of the frozen parts the file holds copies of (``tokenizer.*``,
            ``token_predictor.*``).
        """
        mapped = read_state_dict(path, 'addp')
        self._start_pixels_cache = None  # the frozen parts may change below
        missing, unexpected = [], []
        for name, part in self.frozen_parts.items():  # copies of the frozen parts
            sub = {
                k[len(name) + 1:]: mapped.pop(k)
                for k in list(mapped) if k.startswith(name + '.')
            }
            if not sub:
                continue
            source = f'Checkpoint {path} ({name}.*)'
            result = (
                part.load_release_state(sub, source)
                if name == 'token_predictor' else load_state_into(part, sub, source))
            missing += [f'{name}.{k}' for k in result.missing_keys]
            unexpected += [f'{name}.{k}' for k in result.unexpected_keys]
        result = load_state_into(self, mapped, f'Checkpoint {path}')
        return _IncompatibleKeys(result.missing_keys + missing, result.unexpected_keys + unexpected)

    # -------------------------------------------------------------- process
    def corrupt(self, images: torch.Tensor, mask_t: torch.Tensor, mask_next: torch.Tensor):
        """The forward process with this model's frozen parts (see
        :func:`mmaddp.models.diffusion.corrupt`): ids z0, pixels x_t, q_t."""
        with self.frozen_context():
            return corrupt(self.tokenizer, self.token_predictor, images, mask_t, mask_next)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Clamp to [0, 1] and normalise with ImageNet mean / std."""
        return (pixels.clamp(0, 1) - self.pixel_mean) / self.pixel_std

    def decode_logits(self, pixels: torch.Tensor, ids: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
        """Encoder on pixels + decoder on the reliable ids -> logits B x L x V."""
        features = self.backbone(self.normalize(pixels))[-1]
        if features.dim() != 3:
            raise ValueError("ADDP needs the backbone's token sequence: set out_type='raw'")
        return self.neck(features, ids, mask)

    def denoising_loss(self, images: torch.Tensor, mask_t: torch.Tensor,
                       mask_next: torch.Tensor) -> torch.Tensor:
        """The ADDP loss for given masks (images in [0, 1], masks B x L)."""
        ids, x_t, q_t = self.corrupt(images, mask_t, mask_next)
        logits = self.decode_logits(x_t, ids, mask_t)
        return self.head.loss(logits, q_t, mask_t)

    def loss(self,
             inputs: torch.Tensor,
             data_samples: Optional[List] = None,
             **kwargs) -> Dict[str, torch.Tensor]:
        if isinstance(inputs, (list, tuple)):
            inputs = inputs[0]
        b = inputs.shape[0]
        length = self.neck.num_tokens
        mask_t, mask_next = self.mask_schedule.sample_masks(b, length, device=inputs.device)
        return dict(loss=self.denoising_loss(inputs, mask_t, mask_next))

    def extract_feat(self, inputs: torch.Tensor):
        """Encoder features of clean images in [0, 1]."""
        return self.backbone(self.normalize(inputs))

    # ------------------------------------------------------------ generation
    @torch.no_grad()
    def start_pixels(self) -> torch.Tensor:
        """The decode of the fully masked state (1 x 3 x H x W in [0, 1]):
        the token predictor's prediction with every position hidden, as soft
        code vectors. The same for every sample, so computed once and cached;
        no dataset image is involved."""
        cache = getattr(self, '_start_pixels_cache', None)
        if cache is None:
            with self.frozen_context():
                cache = fully_masked_pixels(self.tokenizer, self.token_predictor,
                                            self.neck.num_tokens, self.pixel_mean.device)
            self._start_pixels_cache = cache
        return cache

    @torch.no_grad()
    def generate(self,
                 num_samples: int,
                 steps: int = 20,
                 schedule: str = 'cosine',
                 temperature: float = 6.0,
                 temperature_decay: bool = True,
                 top_p: Optional[float] = None,
                 seed: Optional[int] = None,
                 generator: Union[torch.Generator, Sequence[torch.Generator], None] = None,
                 return_trace: bool = False,
                 seeds: Optional[Sequence[int]] = None,
                 bf16: Optional[bool] = None,
                 start_images: Optional[torch.Tensor] = None):
        """Unconditional generation by alternating decode and predict.

        Starts from :meth:`start_pixels` (no data read), or, with
        ``start_images``, from real images as the authors' released generation
        code does (the encoder reads a validation image at the first step
        while every token is masked): the way to reproduce the paper's FID
        protocol, but not unconditional, since data enters the samples. Each
        step runs encoder + decoder on
        the current pixels and :func:`~mmaddp.models.diffusion.reveal_step`
        draws ids and chooses which stay masked (fewer each step, none after
        the last); revealed ids are decoded as code vectors, still-masked
        positions as soft vectors of the step's prediction.

        Randomness: ``seed`` or ``generator`` drive the whole batch; with
        ``seeds`` (one int per sample) or a list of generators, sample j draws
        only from its own generator, so it does not depend on which other
        samples share its batch (``tools/generate.py`` shards this way).

        Precision: encoder + decoder run under bf16 autocast when ``bf16``
        is True; ``None`` (the default) means on CUDA only. (The frozen parts
        follow ``frozen_precision``.)

        Args:
            start_images (Tensor, optional): B x 3 x H x W in [0, 1] at the
                model's image size, the pixels of the first step. Defaults
                to None (:meth:`start_pixels` for every sample).

        Returns:
            Tensor: images B x 3 x H x W in [0, 1] (and, with
            ``return_trace``, a list of per-step dicts with ``ids`` and
            ``mask``, both B x L, after the step).
        """
        device = self.pixel_mean.device
        bf16 = device.type == 'cuda' if bf16 is None else bf16
        generator = make_generators(num_samples, device, seed, generator, seeds)
        length, codes = self.neck.num_tokens, self.num_codes
        side = int(round(length**0.5))
        start = self.start_pixels()
        if start_images is not None:
            expected = (num_samples, *start.shape[1:])
            if tuple(start_images.shape) != expected:
                raise ValueError(f'start_images must be {expected} (samples x 3 x H x W of the '
                                 f'model), got {tuple(start_images.shape)}')
            start = start_images.to(device=device, dtype=start.dtype)
        state = dict(pixels=start.expand(num_samples, -1, -1, -1))
        trace = []

        def predict(ids, masked):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = self.decode_logits(state['pixels'], ids, masked)[..., :codes]
            return logits.float().softmax(-1)

        def decode(ids, masked, probs):
            vectors = self.tokenizer.embed(ids.view(num_samples, side, side))
            if masked.any():  # still-masked positions enter the decode as soft vectors
                vectors = mix_code_vectors(self.tokenizer, vectors, masked, probs)
            state['pixels'] = self.tokenizer.decode(vectors).float().clamp(0, 1)
            if return_trace:
                trace.append(dict(ids=ids.clone(), mask=masked.clone()))

        with eval_mode(self):
            sample_ids(
                predict,
                num_samples,
                length,
                steps,
                generator,
                device,
                on_step=decode,
                schedule=schedule,
                temperature=temperature,
                temperature_decay=temperature_decay,
                top_p=top_p)
        pixels = state['pixels']
        return (pixels, trace) if return_trace else pixels
