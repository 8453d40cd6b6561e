"""Building blocks shared by the parts of ADDP."""
from .attention import explicit_attention, select_attention_kernel, use_explicit_attention
from .codebook_table import init_table_from_codebook
from .frozen_parts import FrozenPartsMixin
from .mlm_layer import MlmLayer
from .norm import LAYER_NORM_EPS, layer_norm
from .release_init import RELEASE_INIT_CFG, init_like_release, init_patch_projection

__all__ = [
    'explicit_attention', 'select_attention_kernel', 'use_explicit_attention',
    'init_table_from_codebook', 'FrozenPartsMixin', 'MlmLayer', 'LAYER_NORM_EPS', 'layer_norm',
    'RELEASE_INIT_CFG', 'init_like_release', 'init_patch_projection'
]
