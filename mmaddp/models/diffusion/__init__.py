"""ADDP's diffusion: the mask schedule, the forward (noise) process and the
iterative sampler of the reverse process."""
from .corruption import corrupt, fully_masked_pixels, mix_code_vectors
from .mask_schedule import MaskRatioSchedule, TruncatedNormalMaskRatio
from .sampler import eval_mode, make_generators, masked_fraction, reveal_step, sample_ids

__all__ = [
    'corrupt', 'fully_masked_pixels', 'mix_code_vectors', 'MaskRatioSchedule',
    'TruncatedNormalMaskRatio', 'eval_mode', 'make_generators', 'masked_fraction', 'reveal_step',
    'sample_ids'
]
