from .code_id_cache import CodeIdDataset
from .digits_seg import DIGIT_CLASSES, SEG_CLASSES, DigitsSegDataset
from .transforms import CachedLoadImageFromFile, CheckedLoadImageFromFile

__all__ = [
    'CodeIdDataset', 'DIGIT_CLASSES', 'SEG_CLASSES', 'DigitsSegDataset', 'CachedLoadImageFromFile',
    'CheckedLoadImageFromFile'
]
