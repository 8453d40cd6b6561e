# UperNet + FCN auxiliary head on a tiny ADDPViT (4 levels rescaled to
# strides 4/8/16/32 by mmseg's MultiLevelNeck) for scope/decay tests.
_base_ = ['mmseg::_base_/models/upernet_vit-b16_ln_mln.py']
default_scope = 'mmseg'
custom_imports = dict(imports=['mmaddp'], allow_failed_imports=False)
width = 32
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ADDPViT',
        arch=dict(embed_dims=width, num_layers=4, num_heads=2),
        img_size=64,
        out_type='featmap',
        out_indices=[0, 1, 2, 3],
        final_norm=False),
    neck=dict(in_channels=[width] * 4, out_channels=width, scales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[width] * 4, channels=32, num_classes=11, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=width, channels=16, num_classes=11, norm_cfg=norm_cfg))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='BackboneLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.65))
