"""The demo segmentation set: ADE20K layout, background + 10 digit classes."""
import colorsys

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

#: the demo's classes: the ten digits (classification, detection) and,
#: for segmentation, background first
DIGIT_CLASSES = tuple(str(i) for i in range(10))
SEG_CLASSES = ('background', ) + DIGIT_CLASSES
#: black background, the digits on an evenly spaced hue circle
SEG_PALETTE = [[0, 0, 0]] + [[int(255 * v) for v in colorsys.hsv_to_rgb(i / 10, 0.85, 0.9)]
                             for i in range(10)]


@DATASETS.register_module()
class DigitsSegDataset(BaseSegDataset):
    """ADE20K file layout (``images/{training,validation}/*.jpg``,
    ``annotations/.../*.png``) with 11 classes: label 0 is background, 1-10
    the digits 0-9. Unlike ``ADE20KDataset``, label 0 is a real class, so
    ``reduce_zero_label`` is off."""

    METAINFO = dict(classes=SEG_CLASSES, palette=SEG_PALETTE)

    def __init__(self, img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=False, **kwargs):
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=reduce_zero_label,
            **kwargs)
