# Linear probing of the frozen nano ADDP ViT (4 px patches) on the bundled
# 10-class digits (32 px): the ImageNet probe in miniature (frozen encoder,
# MAE's BatchNorm neck, a linear head, LARS, warm-up then cosine), without
# flips (digits).
_base_ = ['../_base_/datasets/demo_imagenet.py', '../_base_/demo_runtime.py']

# the nano ADDP checkpoint (configs/addp/addp_vit-nano-p4_1xb64-1000i_demo.py);
# set model.backbone.init_cfg=None to probe the encoder at its random init
pretrained = 'work_dirs/addp_vit-nano-p4_1xb64-1000i_demo/iter_1000.pth'
width, depth, img_size = 64, 4, 32
batch_size = 256
base_lr = 0.1  # per 256 images, as on ImageNet

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ADDPViT',
        arch='nano',
        img_size=img_size,
        patch_size=4,
        out_type='avg_featmap',
        pre_norm=True,
        final_norm=True,
        frozen_stages=depth,  # everything in the backbone
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(type='ClsBatchNormNeck', input_features=width),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=width,
        loss=dict(type='CrossEntropyLoss'),
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=0.01)]))

# the demo dataset's RandomResizedCrop (no flips: digits), as the probe's only augmentation
train_dataloader = dict(batch_size=batch_size, sampler=dict(type='InfiniteSampler', shuffle=True))
val_dataloader = dict(batch_size=batch_size)
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='LARS', lr=base_lr * batch_size / 256, weight_decay=0.0, momentum=0.9))
max_iters, warmup_iters = 600, 60
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(checkpoint=dict(interval=max_iters))
