from .hooks import GenerationEvalHook
from .model_wrappers import DeviceAwareDistributedDataParallel
from .optimizers import BackboneLayerDecayOptimWrapperConstructor

__all__ = ['DeviceAwareDistributedDataParallel', 'GenerationEvalHook', 'BackboneLayerDecayOptimWrapperConstructor']
