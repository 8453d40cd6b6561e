"""Token input for ADDPViT: pixels -> frozen VQ code ids -> learned embeddings.

The pixel-versus-token ablation of ADDP feeds the encoder either pixels (the
method) or the tokenizer's discrete code ids (what token-based MIM encoders
such as MAGE read). No OpenMMLab or timm module embeds the ids of a frozen
VQ tokenizer in place of a patch embedding, so this one is written here.
"""
from typing import Sequence

import torch
import torch.nn as nn
from mmengine.model.weight_init import trunc_normal_

from mmaddp.registry import MODELS
from ..layers import FrozenPartsMixin
from ..utils.data_preprocessor import IMAGENET_MEAN_255, IMAGENET_STD_255


class CodeTokenEmbed(FrozenPartsMixin, nn.Module):
    """Replaces ``ADDPViT.patch_embed`` when the encoder reads code ids.

    Normalised images B x 3 x H x W are mapped back to [0, 1] (``mean``/``std``
    are those of the data preprocessor, 0-255 scale), encoded by the frozen
    tokenizer to ids B x H/p x W/p, and embedded: B x (H/p * W/p) x C, the
    layout of timm's ``PatchEmbed``. The tokenizer is held outside the module
    tree (:class:`~mmaddp.models.layers.FrozenPartsMixin`, as in ``ADDP``):
    not trained, not in the optimizer or the checkpoints (its config carries
    its path) and not re-initialised by the backbone's weight init.

    Args:
        tokenizer (dict): config of a ``VQTokenizer`` with ``checkpoint``.
        embed_dims (int): width of the encoder.
        patch_size (int): must equal the tokenizer's downsampling factor.
        mean (Sequence[float]): the inputs' normalisation mean (0-255 scale).
            Defaults to ImageNet's.
        std (Sequence[float]): the inputs' normalisation std. Defaults to
            ImageNet's.
    """

    def __init__(self,
                 tokenizer: dict,
                 embed_dims: int,
                 patch_size: int,
                 mean: Sequence[float] = IMAGENET_MEAN_255,
                 std: Sequence[float] = IMAGENET_STD_255):
        super().__init__()
        if not isinstance(tokenizer, dict) or 'type' not in tokenizer:
            raise ValueError(f'token_input needs a tokenizer config dict with a type, got '
                             f'{tokenizer!r}')
        # the tokenizer lives in the mmpretrain scope whatever the task's scope is
        scope = tokenizer.get('_scope_', 'mmpretrain')
        built = MODELS.build(dict(tokenizer, frozen=True, _scope_=scope))
        if built.downsample_factor != patch_size:
            raise ValueError(f'The tokenizer downsamples by {built.downsample_factor}, but the '
                             f'encoder patch size is {patch_size}: one id per patch needs '
                             'them equal')
        self.hold_frozen(tokenizer=built)
        self.num_codes = built.num_codes
        self.embedding = nn.Embedding(self.num_codes, embed_dims)
        trunc_normal_(self.embedding.weight, std=0.02)
        self.register_buffer(
            'mean', torch.tensor(mean, dtype=torch.float).view(1, 3, 1, 1) / 255, persistent=False)
        self.register_buffer(
            'std', torch.tensor(std, dtype=torch.float).view(1, 3, 1, 1) / 255, persistent=False)

    @property
    def tokenizer(self):
        """The frozen ``VQTokenizer``."""
        return self.frozen_part('tokenizer')

    @torch.no_grad()
    def code_ids(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images B x 3 x H x W -> code ids B x H/p x W/p."""
        pixels = (x.float() * self.std + self.mean).clamp(0, 1)
        ids, _ = self.tokenizer.encode(pixels)
        return ids

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images B x 3 x H x W, or code ids computed before
        (int64 B x h x w) -> embeddings B x N x C."""
        ids = x if x.dtype == torch.int64 else self.code_ids(x)
        return self.embedding(ids.flatten(1))
