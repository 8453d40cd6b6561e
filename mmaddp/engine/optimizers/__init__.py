from .backbone_layer_decay import BackboneLayerDecayOptimWrapperConstructor
from .cpu_bf16_optim_wrapper import CPUBf16OptimWrapper, cpu_flags, cpu_has_fast_bf16

__all__ = [
    'BackboneLayerDecayOptimWrapperConstructor', 'CPUBf16OptimWrapper', 'cpu_flags',
    'cpu_has_fast_bf16'
]
