# ADDP pretraining, ViT-B/16, ImageNet-1k, 1600 epochs: the released recipe.
# Batch 4096 (64 GPUs x 64), AdamW (0.9, 0.95), wd 0.05 (none on 1-D params),
# lr 1e-4 x batch / 256 (auto_scale_lr rescales for other batch sizes),
# 40 warm-up epochs then cosine, grad-norm clip 3.0, AMP (bf16).
# Targets: fine-tuned top-1 83.9, COCO AP box 51.7, ADE20K mIoU 48.1, FID 8.9.
_base_ = ['mmpretrain::_base_/default_runtime.py']
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmaddp'], allow_failed_imports=False)

# the frozen parts: the authors' released files
tokenizer_checkpoint = 'pretrain/vqgan_jax_strongaug.ckpt'
token_predictor_checkpoint = 'pretrain/mage-vitb-1600.pth'
data_root = 'data/imagenet/'
arch, width, predictor_arch = 'b', 768, 'b'
batch_per_gpu, num_gpus = 64, 64
max_epochs, warmup_epochs = 1600, 40

model = dict(
    type='ADDP',
    backbone=dict(
        type='ADDPViT',
        arch=arch,
        img_size=256,
        patch_size=16,
        out_type='raw',
        pre_norm=True,
        drop_rate=0.1,
        attn_drop_rate=0.1),
    neck=dict(
        type='TokenDecoder',
        in_channels=width,
        embed_dims=width,
        depth=8,
        num_heads=16,
        mlp_ratio=4.0,
        num_tokens=256,
        vocab_size=2025,
        drop_rate=0.1),
    head=dict(type='DenoisingHead', label_smoothing=0.1),
    tokenizer=dict(type='VQTokenizer', checkpoint=tokenizer_checkpoint),
    token_predictor=dict(
        type='TokenPredictor', arch=predictor_arch, checkpoint=token_predictor_checkpoint),
    mask_schedule=dict(
        num_grid=100, low=0.5, high=1.0, mean=0.55, std=0.25, min_offset=1, max_offset=5))

train_pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=256,
        crop_ratio_range=(0.2, 1.0),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=batch_per_gpu,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageNet', data_root=data_root, split='train', pipeline=train_pipeline))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    dtype='bfloat16',
    optimizer=dict(
        type='AdamW',
        lr=1e-4 * batch_per_gpu * num_gpus / 256,
        betas=(0.9, 0.95),
        weight_decay=0.05),
    clip_grad=dict(max_norm=3.0),
    paramwise_cfg=dict(flat_decay_mult=0.0))
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
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='AtomicCheckpointHook', interval=20, max_keep_ckpts=3))
randomness = dict(seed=0, diff_rank_seed=True)
# lr above is for 4096 images per step; other totals rescale linearly
auto_scale_lr = dict(enable=True, base_batch_size=4096)
# stop at a NaN / inf loss before it is saved; random draws fixed per iteration (exact resume)
custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='IterationSeedHook')]
