# Pretraining / generation corpus: the classification images themselves, as
# the paper pretrains on ImageNet's training split (data/demo/imagenet, built
# by tools/dataset_converters/make_demo_data.py), without their labels. No
# flips: a mirrored digit is not a digit.
# For ImageNet-1k: data_root = 'data/imagenet/' and img_size = 256.
dataset_type = 'CustomDataset'
data_root = 'data/demo/imagenet/'
img_size = 32
data_preprocessor = dict(
    type='SelfSupDataPreprocessor', mean=[0., 0., 0.], std=[255., 255., 255.],
    to_rgb=True)  # images in [0, 1]
train_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=img_size,
        crop_ratio_range=(0.6, 1.0),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),  # iteration-based demo configs
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix='train',
        with_label=False,
        pipeline=train_pipeline))
# unlabelled val split, for the tokenizer / token-predictor metrics
val_pipeline = [dict(type='CheckedLoadImageFromFile'), dict(type='PackInputs')]
val_dataloader = dict(
    batch_size=100,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix='val',
        with_label=False,
        pipeline=val_pipeline))
test_dataloader = val_dataloader
