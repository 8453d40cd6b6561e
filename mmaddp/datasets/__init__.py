from .demo_data import DIGIT_CLASSES, SEG_CLASSES, build_demo_data
from .digits_seg import DigitsSegDataset

__all__ = ['DIGIT_CLASSES', 'SEG_CLASSES', 'build_demo_data', 'DigitsSegDataset']
