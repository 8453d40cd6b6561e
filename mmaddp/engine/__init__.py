from .hooks import GenerationEvalHook
from .model_wrappers import DeviceAwareDistributedDataParallel
from .optimizers import BackboneLayerDecayOptimWrapperConstructor, CPUBf16OptimWrapper

__all__ = [
    'DeviceAwareDistributedDataParallel', 'GenerationEvalHook',
    'BackboneLayerDecayOptimWrapperConstructor', 'CPUBf16OptimWrapper'
]
