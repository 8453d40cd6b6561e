# A tiny VQ tokenizer trained from scratch on the bundled 32 px corpus:
# 8x downsampling (4 x 4 = 16 tokens), 128 codes of width 32, EMA codebook
# with dead-code restart. About 5 minutes on 2 CPU cores.
_base_ = ['../_base_/datasets/demo_pretrain.py', 'mmpretrain::_base_/default_runtime.py']
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmaddp'], allow_failed_imports=False)

num_codes = 128
model = dict(
    type='VQTokenizer',
    base_channels=16, channel_mults=(1, 2, 2, 4), num_res_blocks=1,
    code_dim=32, num_codes=num_codes, norm_groups=8,
    beta=0.25, ema_decay=0.99, restart_dead_codes=True)

train_dataloader = dict(batch_size=64, num_workers=2)
val_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
val_dataloader = dict(
    batch_size=100, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type={{_base_.dataset_type}}, data_root={{_base_.data_root}}, data_prefix='val',
                 with_label=False, pipeline=val_pipeline))
val_evaluator = dict(type='ReconstructionMetric', num_codes=num_codes)
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.99), weight_decay=0.0))
max_iters = 1200
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=100, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=400)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=400, by_epoch=False, max_keep_ckpts=1,
                    save_last=True))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
