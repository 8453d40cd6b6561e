# Mask R-CNN on a tiny ADDPViT (single stride-16 level) for scope/decay tests.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']
default_scope = 'mmdet'
custom_imports = dict(imports=['mmaddp'], allow_failed_imports=False)
width = 32
model = dict(
    data_preprocessor=dict(pad_size_divisor=16),
    backbone=dict(
        _delete_=True,
        type='ADDPViT',
        arch=dict(embed_dims=32, num_layers=2, num_heads=2),
        img_size=64,
        out_type='featmap',
        out_indices=[-1],
        drop_path_rate=0.1),
    neck=dict(
        _delete_=True,
        type='ChannelMapper',
        in_channels=[width],
        out_channels=width,
        kernel_size=1,
        num_outs=1),
    rpn_head=dict(
        in_channels=width, feat_channels=width, anchor_generator=dict(scales=[2, 4], strides=[16])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width, featmap_strides=[16]),
        bbox_head=dict(in_channels=width, fc_out_channels=64, num_classes=10),
        mask_roi_extractor=dict(out_channels=width, featmap_strides=[16]),
        mask_head=dict(num_convs=1, in_channels=width, conv_out_channels=width, num_classes=10)))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    constructor='BackboneLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.7, flat_decay_mult=0.0))
