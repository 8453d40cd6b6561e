# Mask R-CNN with the ViTDet recipe in miniature on the nano ADDP ViT for the
# bundled digit scenes (128 px read at 64 px, 10 classes): window attention,
# simple feature pyramid, LayerNorm conv heads; light heads for CPU.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py', '../_base_/datasets/demo_coco_instance.py',
    'mmdet::_base_/default_runtime.py'
]
default_scope = 'mmdet'
custom_imports = dict(imports=['mmaddp'], allow_failed_imports=False)

# the nano ADDP checkpoint (configs/addp/addp_vit-nano-p4_1xb64-1000i_demo.py);
# set model.backbone.init_cfg=None to start from random weights
pretrained = 'work_dirs/addp_vit-nano-p4_1xb64-1000i_demo/iter_1000.pth'
width, channels, num_classes = 64, 64, 10
strides = [2, 4, 8, 16]
norm_cfg = dict(type='LN2d', eps=1e-6, requires_grad=True)
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='ADDPViT',
        arch='nano',
        img_size=64,
        patch_size=4,
        out_type='featmap',
        out_indices=[-1],
        pre_norm=True,
        with_cls_token=False,
        window_size=8,
        global_attn_indexes=(1, 3),
        use_rel_pos=True,
        drop_path_rate=0.1,
        token_input=None,  # pixel-vs-token: dict(tokenizer=...) reads code ids
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        _delete_=True,
        type='SimpleFeaturePyramid',
        in_channels=width,
        out_channels=channels,
        scale_factors=(2.0, 1.0, 0.5),
        num_outs=4,
        norm_cfg=norm_cfg),
    rpn_head=dict(
        in_channels=channels,
        feat_channels=channels,
        num_convs=1,
        anchor_generator=dict(scales=[6], strides=strides)),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels, featmap_strides=strides),
        bbox_head=dict(
            _delete_=True,
            type='ConvFCBBoxHead',
            num_shared_convs=0,
            num_shared_fcs=2,
            in_channels=channels,
            conv_out_channels=channels,
            fc_out_channels=256,
            norm_cfg=norm_cfg,
            roi_feat_size=7,
            num_classes=num_classes,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder', target_means=[0.] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False,
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        mask_roi_extractor=dict(out_channels=channels, featmap_strides=strides),
        mask_head=dict(
            num_convs=2,
            in_channels=channels,
            conv_out_channels=channels,
            norm_cfg=norm_cfg,
            num_classes=num_classes)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=400, max_per_img=100), rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(rpn=dict(nms_pre=400, max_per_img=100)))

# the 128 px scenes read at 64 px (a 16 x 16 grid of 4 px patches)
img_scale = (64, 64)
train_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='PackDetInputs'),
]
# the loader OpenMMLab inferencers replace; the tools read it as CheckedLoadImageFromFile
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
train_dataloader = dict(
    dataset=dict(pipeline=train_pipeline),
    batch_size=8,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None)
optim_wrapper = dict(
    type='OptimWrapper',  # fp32: mmcv's CPU NMS (RPN proposals) refuses bf16 boxes
    optimizer=dict(type='AdamW', lr=3e-4, betas=(0.9, 0.999), weight_decay=0.1, fused=True),
    constructor='BackboneLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.75, flat_decay_mult=0.0))
max_iters = 500
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=int(max_iters * 0.08)),
    dict(
        type='MultiStepLR',
        by_epoch=False,
        begin=0,
        end=max_iters,
        milestones=[int(max_iters * 0.8), int(max_iters * 0.93)],
        gamma=0.1),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(
        type='AtomicCheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=2),
    # predictions drawn over the first image of every 4th val batch (work_dir/TIMESTAMP/vis_data)
    visualization=dict(type='DetVisualizationHook', draw=True, interval=4))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
# stop at a NaN / inf loss before it is saved; random draws fixed per iteration (exact resume)
custom_hooks = [
    dict(type='NonFiniteLossHook'),
    dict(type='IterationSeedHook'),
    dict(type='DatasetClassesHook')  # annotation classes = the config's
]
