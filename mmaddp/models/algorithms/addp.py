"""ADDP pretraining: the alternating denoising process as an MMEngine model."""
from typing import Dict, List, Optional

import torch
from mmpretrain.models.selfsup import BaseSelfSupervisor

from mmaddp.registry import MODELS
from mmaddp.utils import load_checkpoint_file, load_state_into
from ..utils.checkpoint_convert import RELEASE_RENAMES
from ..utils.data_preprocessor import UNIT_RANGE_PREPROCESSOR
from ..utils.mask_ratio import MaskRatioSchedule

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# released addp-vit-*-16.pth: which top-level keys belong to which part
_RELEASE_ENCODER = ('patch_embed.', 'cls_token', 'pos_embed', 'tokenizer_norm.', 'blocks.',
                    'norm.')
_RELEASE_DECODER = ('decoder_embed.', 'mask_token', 'decoder_pos_embed_learned',
                    'decoder_pos_mask_embed', 'decoder_pos_token_embed', 'decoder_blocks.',
                    'decoder_norm.', 'token_emb.', 'mlm_layer.')
_RELEASE_UNUSED = ('decoder_pos_embed', 'pos_token_embed', 'pos_mask_embed')  # exact names


def _unused_release_key(key: str) -> bool:
    return key in _RELEASE_UNUSED or key.startswith('decoder_pred.')


@MODELS.register_module()
class ADDP(BaseSelfSupervisor):
    """ADDP: an ``ADDPViT`` encoder (``backbone``) reads pixels decoded from
    partly unreliable VQ tokens; a ``TokenDecoder`` (``neck``) predicts the
    token predictor's next-step distribution; ``DenoisingHead`` (``head``)
    gives the loss. The ``tokenizer`` and ``token_predictor`` are frozen:
    built from config, loaded from their checkpoints, in eval mode, run
    without gradient, and held outside the module tree, so they stay out of
    the optimizer, the gradient norm, DDP and the checkpoints.

    Args:
        backbone, neck, head (dict): the three trained parts.
        tokenizer (dict): a ``VQTokenizer`` config (with ``checkpoint``).
        token_predictor (dict): a ``TokenPredictor`` config (with ``checkpoint``).
        mask_schedule (dict, optional): ``MaskRatioSchedule`` arguments.
        checkpoint (str, optional): a released ``addp-vit-*-16.pth`` or an
            mmaddp ADDP checkpoint to start from.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 tokenizer: dict,
                 token_predictor: dict,
                 mask_schedule: Optional[dict] = None,
                 checkpoint: Optional[str] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        # images in [0, 1] (the tokenizer's input); the encoder normalises itself
        super().__init__(backbone=backbone, neck=neck, head=head,
                         data_preprocessor=data_preprocessor or dict(UNIT_RANGE_PREPROCESSOR),
                         init_cfg=init_cfg)
        # Held outside the module tree: not in the optimizer, the gradient
        # norm, DDP's parameter set or the checkpoints (they have their own).
        self._frozen_parts = dict(tokenizer=MODELS.build(dict(tokenizer, frozen=True)),
                                  token_predictor=MODELS.build(dict(token_predictor, frozen=True)))
        self.mask_schedule = MaskRatioSchedule(**(mask_schedule or {}))
        self.register_buffer('pixel_mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer('pixel_std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        self.num_codes = self.tokenizer.num_codes
        if self.token_predictor.codebook_size != self.num_codes:
            raise ValueError(f'token_predictor.codebook_size ({self.token_predictor.codebook_size})'
                             f' != tokenizer.num_codes ({self.num_codes})')
        if self.backbone.patch_size != self.tokenizer.downsample_factor:
            raise ValueError(f'backbone patch_size {self.backbone.patch_size} must equal the '
                             f'tokenizer downsampling {self.tokenizer.downsample_factor}')
        self._checkpoint = checkpoint

    @property
    def tokenizer(self):
        return self._frozen_parts['tokenizer']

    @property
    def token_predictor(self):
        return self._frozen_parts['token_predictor']

    def _apply(self, fn, *args, **kwargs):
        """Move / cast the frozen parts along with the model."""
        super()._apply(fn, *args, **kwargs)
        for part in self._frozen_parts.values():
            part._apply(fn, *args, **kwargs)
        return self

    # ----------------------------------------------------------------- init
    def init_weights(self):
        """Initialise the trained parts only; the frozen ones keep their
        checkpoints. Then apply ``checkpoint`` if given."""
        for part in (self.backbone, self.neck, self.head):
            part.init_weights()
        if self._checkpoint is not None:
            self.load_checkpoint(self._checkpoint)
        self._is_init = True

    def load_checkpoint(self, path: str):
        """Load a released ``addp-vit-*-16.pth`` (``model`` key; encoder and
        decoder keys at top level, optional ``vqgan.*`` / ``token_predictor.*``
        copies of the frozen parts) or an mmaddp ADDP checkpoint."""
        ckpt = load_checkpoint_file(path)
        state = ckpt.get('model', ckpt.get('state_dict', ckpt))
        if any(k.startswith('backbone.') for k in state):
            mapped = dict(state)
        elif 'patch_embed.proj.weight' in state and 'decoder_embed.weight' in state:
            mapped = {}
            for k, v in state.items():
                if _unused_release_key(k):
                    continue
                if k.startswith(_RELEASE_ENCODER):
                    for old, new in RELEASE_RENAMES.items():
                        k = new + k[len(old):] if k.startswith(old) else k
                    mapped['backbone.' + k] = v
                elif k.startswith(_RELEASE_DECODER):
                    mapped['neck.' + k] = v
                elif k.startswith('vqgan.'):
                    mapped['tokenizer.' + k[len('vqgan.'):]] = v
                elif k.startswith('token_predictor.'):
                    mapped[k] = v
                else:
                    mapped[k] = v  # reported as unexpected below
        else:
            raise ValueError(f'Checkpoint {path} is not an ADDP checkpoint: it needs encoder '
                             "and decoder keys ('patch_embed.*', 'decoder_embed.*') or an "
                             "mmaddp 'backbone.*' state_dict")
        for name, part in self._frozen_parts.items():  # copies of the frozen parts
            sub = {k[len(name) + 1:]: mapped.pop(k) for k in list(mapped)
                   if k.startswith(name + '.')}
            if sub:
                load_state_into(part, sub, f'Checkpoint {path} ({name}.*)')
        return load_state_into(self, mapped, f'Checkpoint {path}')

    # -------------------------------------------------------------- process
    @torch.no_grad()
    def corrupt(self, images: torch.Tensor, mask_t: torch.Tensor, mask_next: torch.Tensor):
        """Steps 1-4 of the spec (frozen parts, no gradient).

        Args:
            images: B x 3 x H x W in [0, 1].
            mask_t, mask_next: B x L bool, ``mask_t`` within ``mask_next``.

        Returns:
            tuple: ids z0 (B x L), pixels x_t (B x 3 x H x W in [0, 1]) and
            the target probabilities q_t (B x L x codes).
        """
        ids, e0 = self.tokenizer.encode(images)
        b, h, w = ids.shape
        ids = ids.flatten(1)
        # both token-predictor passes share one batched forward
        probs = self.token_predictor.predict_probs(torch.cat([ids, ids]),
                                                   torch.cat([mask_next, mask_t]))
        p_next, q_t = probs.split(b)
        soft = self.tokenizer.soft_embed(p_next.view(b, h, w, -1))
        z_t = torch.where(mask_t.view(b, 1, h, w), soft.to(e0.dtype), e0)
        x_t = self.tokenizer.decode(z_t).clamp(0, 1)
        return ids, x_t, q_t

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

    def loss(self, inputs: torch.Tensor, data_samples: Optional[List] = None,
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
