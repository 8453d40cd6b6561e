from .denoising_head import DenoisingHead

__all__ = ['DenoisingHead']
