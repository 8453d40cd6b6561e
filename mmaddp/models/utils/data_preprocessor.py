"""The data preprocessor of models that read images in [0, 1]."""

#: uint8 BGR images -> RGB in [0, 1] (no mean/std): the tokenizer's input
UNIT_RANGE_PREPROCESSOR = dict(type='mmpretrain.SelfSupDataPreprocessor', mean=[0., 0., 0.],
                               std=[255., 255., 255.], to_rgb=True)
