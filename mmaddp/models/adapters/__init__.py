"""Downstream adapters of the encoder: ViTDet's simple feature pyramid and
window attention (detection, segmentation) and the code-id input of the
pixel-versus-token ablation."""
from .code_token_embed import CodeTokenEmbed
from .simple_feature_pyramid import SimpleFeaturePyramid
from .window_attention import WindowBlock

__all__ = ['CodeTokenEmbed', 'SimpleFeaturePyramid', 'WindowBlock']
