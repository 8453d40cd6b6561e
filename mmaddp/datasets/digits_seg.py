"""The demo segmentation set: ADE20K layout, background + 10 digit classes."""
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .demo_data import SEG_CLASSES, SEG_PALETTE


@DATASETS.register_module()
class DigitsSegDataset(BaseSegDataset):
    """ADE20K file layout (``images/{training,validation}/*.jpg``,
    ``annotations/.../*.png``) with 11 classes: label 0 is background, 1-10
    the digits 0-9. Unlike ``ADE20KDataset``, label 0 is a real class, so
    ``reduce_zero_label`` is off."""

    METAINFO = dict(classes=SEG_CLASSES, palette=SEG_PALETTE)

    def __init__(self, img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=False,
                 **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)
