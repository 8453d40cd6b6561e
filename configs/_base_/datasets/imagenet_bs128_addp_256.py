# ImageNet-1k at 256 px with the augmentation of the released ADDP fine-tuning
# recipe (timm's create_transform as the release calls it, in mmpretrain terms):
# RandomResizedCrop 256 (scale 0.08-1, bicubic) + horizontal flip,
# RandAugment rand-m9-mstd0.5-inc1 (two ops, magnitude 9 of 10, std 0.5,
# 'increasing' op set), random erasing p=0.25 in per-pixel mode.
# Evaluation at 256 px keeps the whole image: the release's crop ratio is 1.0
# above 224 px, so resize the short side to 256 and take the central 256.
# 128 images per GPU; 8 GPUs give the recipe's batch of 1024.
dataset_type = 'ImageNet'
data_root = 'data/imagenet'
img_size = 256
data_preprocessor = dict(
    num_classes=1000, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
    to_rgb=True)  # images are loaded as BGR
bgr_mean = data_preprocessor['mean'][::-1]
bgr_std = data_preprocessor['std'][::-1]

train_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=img_size,
        crop_ratio_range=(0.08, 1.0),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[round(v) for v in bgr_mean], interpolation='bicubic')),
    # timm's 'pixel' mode: per-pixel normal noise in the normalised space
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
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

train_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, split='val', pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
