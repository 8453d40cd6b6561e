"""mmaddp: the OpenMMLab toolkit for ADDP.

Tian et al., "ADDP: Learning General Representations for Image Recognition
and Generation with Alternating Denoising Diffusion Process", ICLR 2024.

Importing the package registers its models in the mmpretrain, mmdet and mmseg
scopes and allow-lists the classes MMEngine checkpoints need under
``torch.load(weights_only=True)``.
"""
from .checkpoint import register_safe_checkpoint_globals
from .version import __version__, version_info

register_safe_checkpoint_globals()

from . import datasets, engine, evaluation, models  # noqa: E402,F401

__all__ = ['__version__', 'version_info']
