from .atomic_checkpoint_hook import AtomicCheckpointHook, AtomicLocalBackend, write_atomically
from .dataset_classes_hook import DatasetClassesHook, check_dataset_classes
from .generation_eval_hook import GenerationEvalHook
from .iteration_seed_hook import IterationSeedHook
from .non_finite_loss_hook import NonFiniteLossError, NonFiniteLossHook

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'DatasetClassesHook', 'check_dataset_classes',
    'GenerationEvalHook', 'IterationSeedHook', 'NonFiniteLossError', 'NonFiniteLossHook',
    'write_atomically'
]
