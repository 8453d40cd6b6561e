"""Data preprocessors of mmaddp models."""
import torch
from mmpretrain.models.utils.data_preprocessor import ClsDataPreprocessor

from mmaddp.registry import MODELS

#: ImageNet mean / std on the 0-255 scale (the data preprocessors' values)
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)
#: uint8 BGR images -> RGB in [0, 1] (no mean/std): the tokenizer's input
UNIT_RANGE_PREPROCESSOR = dict(
    type='mmpretrain.SelfSupDataPreprocessor',
    mean=[0., 0., 0.],
    std=[255., 255., 255.],
    to_rgb=True)


@MODELS.register_module()
class CodeIdDataPreprocessor(ClsDataPreprocessor):
    """``ClsDataPreprocessor`` that also accepts batches of code ids.

    Images (uint8 or float, B x 3 x H x W) are processed as by the parent:
    colour order, normalisation, batch augments. Code ids (int64, B x h x w
    or B x 1 x h x w, from ``CodeIdDataset``) are already augmented and are
    not pixels: they pass through unchanged, with their labels. One model
    then trains on cached ids and evaluates on images.
    """

    def forward(self, data: dict, training: bool = False) -> dict:
        inputs = data['inputs']
        if not (isinstance(inputs, torch.Tensor) and inputs.dtype == torch.int64):
            return super().forward(data, training)
        if inputs.dim() == 4 and inputs.shape[1] == 1:
            inputs = inputs[:, 0]
        if inputs.dim() != 3:
            raise ValueError(f'Code ids must be B x h x w (or B x 1 x h x w), got '
                             f'{tuple(inputs.shape)}')
        return dict(
            inputs=self.cast_data(inputs), data_samples=self.cast_data(data.get('data_samples')))
