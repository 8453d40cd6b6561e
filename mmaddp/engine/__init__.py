from .model_wrappers import DeviceAwareDistributedDataParallel
from .optimizers import BackboneLayerDecayOptimWrapperConstructor

__all__ = ['DeviceAwareDistributedDataParallel', 'BackboneLayerDecayOptimWrapperConstructor']
