# Linear probing of the frozen ADDP ViT-B/16 on ImageNet-1k at 256 px: the
# MAE / MAGE protocol as mmpretrain ships it for MAE
# (mae/benchmarks/vit-base-p16_8xb2048-linear-coslr-90e_in1k.py).
# Batch 16384 (8 GPUs x 2048), LARS (momentum 0.9, no weight decay), base lr
# 0.1 per 256 images (lr 6.4), 10 warm-up epochs then cosine to 0 over 90
# epochs, RandomResizedCrop + flip only, cross-entropy, fp16 AMP.
# Features: the mean of the patch tokens after the pretraining encoder's final
# LayerNorm (the tokens the release fine-tunes from), then a LayerNorm without
# learned affine (its init, frozen) and MAE's BatchNorm without affine
# (ClsBatchNormNeck); only the linear head trains.
_base_ = [
    '../_base_/datasets/imagenet_bs128_addp_256.py',
    'mmpretrain::_base_/default_runtime.py',
]
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmaddp'], allow_failed_imports=False)

# the authors' released ADDP ViT-B/16 (or an mmaddp pretraining checkpoint)
pretrained = 'checkpoints/addp-vit-base-16.pth'

arch, width, depth = 'b', 768, 12
batch_size, num_gpus = 2048, 8
base_lr = 0.1  # per 256 images
max_epochs, warmup_epochs = 90, 10

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ADDPViT',
        arch=arch,
        img_size=256,
        patch_size=16,
        out_type='avg_featmap',
        pre_norm=True,  # the pretraining encoder's embedding LayerNorm
        final_norm=True,
        frozen_stages=depth,  # everything in the backbone
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(type='ClsBatchNormNeck', input_features=width),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=width,
        loss=dict(type='CrossEntropyLoss'),
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=0.01)]))

# the probe's augmentation: no RandAugment, no erasing
train_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=256,
        crop_ratio_range=(0.08, 1.0),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=batch_size, drop_last=True, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=256)
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(
        type='LARS', lr=base_lr * batch_size * num_gpus / 256, weight_decay=0.0, momentum=0.9))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-4,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - warmup_epochs,
        eta_min=0.0,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=10)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(enable=True, base_batch_size=batch_size * num_gpus)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='AtomicCheckpointHook', interval=10, max_keep_ckpts=2, save_best='auto'))
randomness = dict(seed=0, diff_rank_seed=True)
# stop at a NaN / inf loss before it is saved; random draws fixed per iteration (exact resume)
custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='IterationSeedHook')]
