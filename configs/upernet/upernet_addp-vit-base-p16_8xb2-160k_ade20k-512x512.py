# ADE20K semantic segmentation with UperNet on the ADDP ViT-B/16, 512x512 crops,
# 160k iterations. Target: mIoU 48.1 (published, ADDP ViT-B/16; no code was
# released, so this follows the MAE/BEiT recipe the paper names).
# Features of blocks 4/6/8/12 (indices 3, 5, 7, 11) are rescaled to strides
# 4/8/16/32 by mmseg's Feature2Pyramid, the MAE/BEiT neck (x4 and x2 by
# transposed convolutions, x1, x0.5 by max pooling); UPerHead on all four,
# auxiliary FCNHead (weight 0.4) on the stride-16 level. AdamW lr 1e-4
# (0.9, 0.999), wd 0.05 (none on 1-D parameters, class token, position
# embedding), layer decay 0.65 over the backbone blocks, 1500 linear warm-up
# iterations then poly (power 1) to 0, drop path 0.1, batch 16 (8 GPUs x 2),
# fp16 AMP, sliding-window evaluation (512 windows, stride 341).
# The backbone keeps the pretraining encoder's LayerNorm before the first block
# (pre_norm=True, the features pretraining learned) and, like MAE/BEiT, no
# final norm on the block outputs.
_base_ = [
    'mmseg::_base_/models/upernet_mae.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
default_scope = 'mmseg'
custom_imports = dict(imports=['mmaddp'], allow_failed_imports=False)

# the authors' released ADDP ViT-B/16 (or an mmaddp pretraining checkpoint)
pretrained = 'checkpoints/addp-vit-base-16.pth'

arch, width = 'b', 768
out_indices = (3, 5, 7, 11)
drop_path = 0.1
lr, layer_decay = 1e-4, 0.65
warmup_iters, max_iters = 1500, 160000
num_classes = 150
crop_size = (512, 512)

data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ADDPViT',
        arch=arch,
        img_size=crop_size,
        patch_size=16,
        out_type='featmap',
        out_indices=out_indices,
        pre_norm=True,
        final_norm=False,
        drop_path_rate=drop_path,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(embed_dim=width, rescales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[width] * 4, channels=width, num_classes=num_classes),
    auxiliary_head=dict(in_channels=width, in_index=2, num_classes=num_classes),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    dtype='float16',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='BackboneLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=layer_decay,
        flat_decay_mult=0.0,
        custom_keys={
            '.cls_token': dict(decay_mult=0.0),
            '.pos_embed': dict(decay_mult=0.0),
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=16000)

# 8 GPUs x 2 images
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=16000, max_keep_ckpts=3),
    # predictions drawn over one val image in 250 (work_dir/TIMESTAMP/vis_data)
    visualization=dict(type='SegVisualizationHook', draw=True, interval=250))
# stop at a NaN / inf loss before it is saved; random draws fixed per iteration (exact resume)
custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='IterationSeedHook')]
