# Classification in ImageNet folder layout (train/CLASS/*.png, val/CLASS/*.png):
# the demo digits at 32 px. For ImageNet-1k in the same folder layout:
# data_root = 'data/imagenet/', num_classes = 1000 and the 256 px pipelines.
dataset_type = 'CustomDataset'
data_root = 'data/demo/imagenet/'
num_classes = 10
img_size = 32
data_preprocessor = dict(
    type='ClsDataPreprocessor',
    num_classes=num_classes,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)
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
# the loader OpenMMLab inferencers replace; the tools read it as CheckedLoadImageFromFile
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge', scale=img_size, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
# default_collate stacks the batch in the loader worker: one shared-memory
# tensor per batch, not one per image (pseudo_collate measured 22 ms of the
# main process per batch of 64 here, default_collate 2 ms)
train_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    collate_fn=dict(type='default_collate'),
    sampler=dict(type='DefaultSampler', shuffle=True),
    # ann_file: '' lists the class folders; a file of 'CLASS/NAME.png LABEL'
    # lines picks a subset (the demo's 100 labels per class)
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix='train',
        ann_file='',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    collate_fn=dict(type='default_collate'),
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='val', pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
