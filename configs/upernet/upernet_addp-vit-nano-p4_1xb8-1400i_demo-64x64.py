# UperNet + auxiliary FCN head on the nano ADDP ViT for the bundled digit
# scenes (background + 10 classes): the ADE20K recipe in miniature, started
# from the ADDP checkpoint itself. Choices: docs/demo_schedules.md.
_base_ = [
    'mmseg::_base_/models/upernet_mae.py', '../_base_/datasets/demo_ade20k.py',
    'mmseg::_base_/default_runtime.py'
]
default_scope = 'mmseg'
custom_imports = dict(imports=['mmaddp'], allow_failed_imports=False)

# the nano ADDP checkpoint (configs/addp); model.backbone.init_cfg=None: random weights
pretrained = 'work_dirs/addp_vit-nano-p4_1xb64-1000i_demo/iter_1000.pth'
# the 128 px scenes read at 64 px
width, num_classes, size = 64, 11, 64
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(size=(size, size))
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='ADDPViT',
        arch='nano',
        img_size=size,
        patch_size=4,
        out_type='featmap',
        out_indices=[0, 1, 2, 3],
        pre_norm=True,
        final_norm=False,
        drop_path_rate=0.1,
        token_input=None,  # pixel-vs-token: dict(tokenizer=...) reads code ids
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    # stride-4 tokens -> strides 2 (one transposed conv), 4, 8, 16 (max pooling)
    neck=dict(embed_dim=width, rescales=[2, 1, 0.5, 0.25], norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=[width] * 4, channels=64, num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=width, channels=32, num_classes=num_classes, norm_cfg=norm_cfg))

# the scenes at 96 px (training: x0.8-1.25 of that, cropped to 96)
train_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(size, size), ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(size, size), cat_max_ratio=0.95),
    dict(type='PackSegInputs'),
]
# the loader OpenMMLab inferencers replace; the tools read it as CheckedLoadImageFromFile
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(size, size), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
# one loader worker: the demo gives each run one core
train_dataloader = dict(num_workers=1, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=1, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# lr 5e-3 (docs/demo_schedules.md)
optim_wrapper = dict(
    type='CPUBf16OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-3, betas=(0.9, 0.999), weight_decay=0.05, fused=True),
    constructor='BackboneLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.5, flat_decay_mult=0.0))
max_iters = 1400
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=50, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(
        type='AtomicCheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=2),
    # predictions drawn over one val image in 25 (work_dir/TIMESTAMP/vis_data)
    visualization=dict(type='SegVisualizationHook', draw=True, interval=25))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
# stop at a NaN / inf loss before it is saved; random draws fixed per iteration (exact resume)
custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='IterationSeedHook')]
