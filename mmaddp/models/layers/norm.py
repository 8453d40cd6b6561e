"""The LayerNorm of the release (ADDP, MAGE, MAE): eps 1e-6."""
import torch.nn as nn

#: the release's LayerNorm epsilon (torch's default is 1e-5)
LAYER_NORM_EPS = 1e-6


def layer_norm(dim: int, **kwargs) -> nn.LayerNorm:
    """``nn.LayerNorm(dim, eps=1e-6)``; usable as timm's ``norm_layer``."""
    return nn.LayerNorm(dim, eps=LAYER_NORM_EPS, **kwargs)
