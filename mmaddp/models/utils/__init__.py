"""Data-side helpers of the models: preprocessors and batch augments."""
from .batch_affine import BatchRandomAffine
from .data_preprocessor import (IMAGENET_MEAN_255, IMAGENET_STD_255, UNIT_RANGE_PREPROCESSOR,
                                CodeIdDataPreprocessor)

__all__ = [
    'BatchRandomAffine', 'IMAGENET_MEAN_255', 'IMAGENET_STD_255', 'UNIT_RANGE_PREPROCESSOR',
    'CodeIdDataPreprocessor'
]
