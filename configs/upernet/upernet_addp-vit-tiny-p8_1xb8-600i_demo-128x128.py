# UperNet + auxiliary FCN head on the tiny ADDP ViT (width 64, 4 blocks, 8 px
# patches) for the bundled digit scenes (128 px, background + 10 classes): the
# ADE20K recipe in miniature (4 blocks of the stride-8 map rescaled to strides
# 4/8/16/32 by mmseg's MultiLevelNeck,
# AdamW, layer decay, poly schedule). 2 CPU cores, minutes. Bar: mIoU >= 50.
_base_ = [
    'mmseg::_base_/models/upernet_vit-b16_ln_mln.py', '../_base_/datasets/demo_ade20k.py',
    'mmseg::_base_/default_runtime.py'
]
default_scope = 'mmseg'
custom_imports = dict(imports=['mmaddp'], allow_failed_imports=False)

# the tiny ADDP checkpoint (configs/addp/addp_vit-tiny-p8_1xb64-2000i_demo.py);
# set model.backbone.init_cfg=None to start from random weights
pretrained = 'work_dirs/addp_vit-tiny-p8_1xb64-2000i_demo/iter_2000.pth'
width, num_classes = 64, 11
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(size=(128, 128))
model = dict(
    pretrained=None,
    data_preprocessor=data_preprocessor,
    backbone=dict(_delete_=True, type='ADDPViT',
                  arch=dict(embed_dims=width, num_layers=4, num_heads=4), img_size=128,
                  patch_size=8, out_type='featmap', out_indices=[0, 1, 2, 3], pre_norm=True,
                  final_norm=False, drop_path_rate=0.1,
                  token_input=None,  # pixel-vs-token: dict(tokenizer=...) reads code ids
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[width] * 4, out_channels=width, scales=[2, 1, 0.5, 0.25]),
    decode_head=dict(in_channels=[width] * 4, channels=64, num_classes=num_classes,
                     norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=width, channels=32, num_classes=num_classes,
                        norm_cfg=norm_cfg),
    test_cfg=dict(mode='whole'))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='BackboneLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.75, flat_decay_mult=0.0))
max_iters = 600
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=50, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
