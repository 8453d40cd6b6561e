"""Layer-wise lr decay for detectors and segmentors built on ``ADDPViT``."""
from functools import partial

import torch.nn as nn
from mmpretrain.engine.optimizers import LearningRateDecayOptimWrapperConstructor

from mmaddp.registry import register_optim_wrapper_constructor


@register_optim_wrapper_constructor()
class BackboneLayerDecayOptimWrapperConstructor(LearningRateDecayOptimWrapperConstructor):
    """mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` for any model
    with a ``backbone`` that has ``get_layer_depth``.

    mmpretrain's constructor asks the *top-level* model for
    ``get_layer_depth``; mmpretrain classifiers have it, mmdet detectors and
    mmseg segmentors do not. This subclass only supplies that function from
    ``model.backbone`` (prefix ``'backbone.'``), so the decay rule, weight-decay
    multipliers and ``custom_keys`` are exactly mmpretrain's. Necks and heads
    fall outside the backbone prefix and get the last depth (lr scale 1).
    Usable from the mmpretrain, mmdet and mmseg scopes.
    """

    def add_params(self,
                   params,
                   module: nn.Module,
                   prefix: str = '',
                   get_layer_depth=None,
                   **kwargs) -> None:
        if get_layer_depth is None and not hasattr(module, 'get_layer_depth'):
            backbone = getattr(module, 'backbone', None)
            if backbone is None or not hasattr(backbone, 'get_layer_depth'):
                raise TypeError(
                    f'{type(module).__name__} has no get_layer_depth and no backbone with '
                    'one; layer-wise lr decay needs a backbone such as ADDPViT')
            get_layer_depth = partial(backbone.get_layer_depth, prefix=f'{prefix}backbone.')
        super().add_params(params, module, prefix=prefix, get_layer_depth=get_layer_depth, **kwargs)
