"""Inference entry points. Recognition runs through the ecosystem's own
inferencers (mmpretrain ``ImageClassificationInferencer``, mmdet
``DetInferencer``, mmseg ``MMSegInferencer``) on mmaddp configs; generation
through :class:`ADDPGenerationInferencer`."""
from .generation_inferencer import ADDPGenerationInferencer

__all__ = ['ADDPGenerationInferencer']
