# Mask R-CNN on an ADDP ViT-B/16 with the ViTDet recipe: simple feature
# pyramid, window attention (14x14) with 4 global blocks, decomposed relative
# positions, large-scale jitter at 1024x1024, 100 epochs (184,375 iterations of
# 64 images: 16 GPUs x 4), AdamW with layer-wise lr decay 0.7, fp16 AMP.
# Published target (ADDP paper, COCO val2017): ViT-B AP box 51.7.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmaddp'], allow_failed_imports=False)

# the released ADDP checkpoint (its 'model' key is read; decoder and frozen parts dropped)
pretrained = 'checkpoints/addp-vit-base-16.pth'

data_root = 'data/coco/'
image_size = (1024, 1024)
norm_cfg = dict(type='LN2d', eps=1e-6, requires_grad=True)  # LayerNorm over channels

model = dict(
    data_preprocessor=dict(
        pad_size_divisor=32,  # ImageNet mean/std, RGB: what the ADDP encoder reads
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(
        _delete_=True,
        type='ADDPViT',
        arch='b',
        img_size=image_size,  # position embedding resized 16x16 -> 64x64 when loading
        patch_size=16,
        out_type='featmap',
        out_indices=[-1],
        with_cls_token=False,  # ViTDet runs on patch tokens only
        window_size=14,
        global_attn_indexes=(2, 5, 8, 11),
        use_rel_pos=True,
        pre_norm=True,  # the pretraining encoder's LayerNorm before the blocks
        final_norm=False,  # ViTDet feeds the last block's output to the pyramid
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        _delete_=True,
        type='SimpleFeaturePyramid',
        in_channels=768,
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        num_outs=5,  # strides 4, 8, 16, 32 and a pooled 64
        norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

# large-scale jitter: random scale 0.1-2.0 of 1024, 1024 crop, pad to 1024
backend_args = None
train_pipeline = [
    dict(type='CheckedLoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(
        type='RandomCrop',
        crop_type='absolute_range',
        crop_size=image_size,
        recompute_bbox=True,
        allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='Pad', size=image_size, pad_val=dict(img=(128, 128, 128))),
    dict(type='PackDetInputs'),
]
# the loader OpenMMLab inferencers replace; the tools read it as CheckedLoadImageFromFile
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=(128, 128, 128))),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,  # x 16 GPUs = 64
    num_workers=8,
    batch_sampler=None,  # every image is padded to 1024x1024
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='BackboneLayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    paramwise_cfg=dict(
        layer_decay_rate=0.7, norm_decay_mult=0.0, custom_keys={'.pos_embed':
                                                                dict(decay_mult=0.0)}))

# 100 epochs = 184,375 iterations x 64 images / 118k images; lr x0.1 at 88 and 96 epochs
max_iters = 184375
interval = 5000
train_cfg = dict(
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=interval,
    dynamic_intervals=[(max_iters // interval * interval + 1, max_iters)])
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(
        type='MultiStepLR',
        by_epoch=False,
        begin=0,
        end=max_iters,
        milestones=[163889, 177546],
        gamma=0.1),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(
        type='AtomicCheckpointHook',
        by_epoch=False,
        interval=interval,
        save_last=True,
        max_keep_ckpts=3),
    # predictions drawn over one val image in 250 (work_dir/TIMESTAMP/vis_data)
    visualization=dict(type='DetVisualizationHook', draw=True, interval=250))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=64)
# stop at a NaN / inf loss before it is saved; random draws fixed per iteration (exact resume)
custom_hooks = [
    dict(type='NonFiniteLossHook'),
    dict(type='IterationSeedHook'),
    dict(type='DatasetClassesHook')  # annotation classes = the config's
]
