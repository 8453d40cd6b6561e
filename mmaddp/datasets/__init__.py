from .code_id_cache import CodeIdDataset, encode_training_views
from .demo_data import DIGIT_CLASSES, SEG_CLASSES, build_demo_data
from .digits_seg import DigitsSegDataset
from .transforms import CachedLoadImageFromFile

__all__ = ['CodeIdDataset', 'encode_training_views', 'DIGIT_CLASSES', 'SEG_CLASSES', 'build_demo_data', 'DigitsSegDataset',
           'CachedLoadImageFromFile']
