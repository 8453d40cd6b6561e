"""The release's from-scratch initialisation (ADDP, as MAE and MAGE).

Every ``nn.Linear`` weight xavier_uniform with zero bias and every
``nn.LayerNorm`` weight 1 / bias 0 go through mmengine's initialisers
(:data:`RELEASE_INIT_CFG`). Two parts of the release have no mmengine
initialiser and are written here:

* the patch projection is xavier_uniform on its weight viewed as
  ``(out, in * p * p)`` (a linear map of each patch); mmengine's ``Xavier``
  on a ``Conv2d`` counts ``out * p * p`` as the fan-out, a p^2 times smaller
  std;
* class / mask tokens, token tables and learned position embeddings are
  bare ``nn.Parameter`` s (or ``nn.Embedding`` weights) drawn from
  normal(0, 0.02); mmengine's initialisers address modules, not parameters.
"""
import copy
from typing import Iterable, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.model.weight_init import initialize

#: mmengine initialisers for the release's Linear and LayerNorm layers
RELEASE_INIT_CFG = [
    dict(type='Xavier', layer='Linear', distribution='uniform', bias=0.),
    dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
]
#: the std of every token, token table and learned position embedding
EMBEDDING_STD = 0.02


def init_patch_projection(conv: nn.Conv2d) -> None:
    """xavier_uniform on the weight viewed as ``(out, in * p * p)``, zero bias."""
    weight = conv.weight.data
    nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def init_like_release(modules: Sequence[nn.Module],
                      embeddings: Iterable[torch.Tensor] = (),
                      patch_projections: Iterable[nn.Conv2d] = (),
                      layer_init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
    """Initialise ``modules`` (recursively) as the release does.

    Args:
        modules: the modules whose Linear / LayerNorm layers are initialised
            (frozen parts held inside must not be listed).
        embeddings: parameters drawn from normal(0, 0.02).
        patch_projections: convolutions initialised as flattened Linears.
        layer_init_cfg: mmengine initialisers to use instead of
            :data:`RELEASE_INIT_CFG` (default: the release's); applied last,
            so they may also re-draw ``nn.Embedding`` tables (e.g.
            ``dict(type='Normal', layer='Embedding', std=...)``).
    """
    layer_init_cfg = RELEASE_INIT_CFG if layer_init_cfg is None else layer_init_cfg
    for param in embeddings:
        nn.init.normal_(param, std=EMBEDDING_STD)
    for conv in patch_projections:
        init_patch_projection(conv)
    # last, so that an init_cfg may also address nn.Embedding token tables
    for module in modules:
        initialize(module, copy.deepcopy(layer_init_cfg))
