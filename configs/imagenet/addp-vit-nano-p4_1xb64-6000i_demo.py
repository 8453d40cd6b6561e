# Fine-tuning the nano ADDP ViT (4 px patches) on the bundled 10-class digits
# (32 px) with all 30,000 labels: the ImageNet recipe in miniature, without
# regularisation (13 passes over the data underfit: no drop path, flips,
# RandAugment or batch augments). Choices and their measurements:
# docs/demo_schedules.md.
_base_ = ['../_base_/datasets/demo_imagenet.py', '../_base_/demo_runtime.py']

# the nano ADDP checkpoint (configs/addp/addp_vit-nano-p4_1xb64-1000i_demo.py);
# set model.backbone.init_cfg=None to start from random weights
pretrained = 'work_dirs/addp_vit-nano-p4_1xb64-1000i_demo/iter_1000.pth'
width, img_size = 64, 32
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ADDPViT',
        arch='nano',
        img_size=img_size,
        patch_size=4,
        out_type='avg_featmap',
        pre_norm=True,
        final_norm=False,
        drop_path_rate=0.0,
        token_input=None,  # pixel-vs-token: dict(tokenizer=...) reads code ids
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=width,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        # PyTorch's default Linear init (docs/demo_schedules.md)
        init_cfg=None))

# the bundled images are 32 px already: decode once per worker and pack
train_pipeline = [dict(type='CachedLoadImageFromFile'), dict(type='PackInputs')]
# the loader OpenMMLab inferencers replace; the tools read it as CheckedLoadImageFromFile
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(img_size, img_size), backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    sampler=dict(type='InfiniteSampler', shuffle=True), dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='CPUBf16OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.05, fused=True),
    constructor='LearningRateDecayOptimWrapperConstructor',
    # mmpretrain's constructor, no layer decay at this depth (docs/demo_schedules.md)
    paramwise_cfg=dict(
        layer_decay_rate=1.0,
        flat_decay_mult=0.0,
        custom_keys={
            '.cls_token': dict(decay_mult=0.0),
            '.pos_embed': dict(decay_mult=0.0)
        }))
max_iters = 6000
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=100, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(checkpoint=dict(interval=max_iters))
