from .token_metrics import MaskedTokenAccuracy, ReconstructionMetric

__all__ = ['MaskedTokenAccuracy', 'ReconstructionMetric']
