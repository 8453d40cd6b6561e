# A tiny VQ tokenizer trained from scratch on the bundled 32 px digits:
# 4x downsampling (8 x 8 = 64 tokens), 512 codes of width 32, EMA codebook
# with dead-code restart. Forward passes in bf16 where the CPU has it.
_base_ = ['../_base_/datasets/demo_pretrain.py', '../_base_/demo_runtime.py']

num_codes = 512
model = dict(
    type='VQTokenizer',
    base_channels=32,
    channel_mults=(1, 2, 4),
    num_res_blocks=1,
    code_dim=32,
    num_codes=num_codes,
    norm_groups=8,
    beta=0.25,
    ema_decay=0.99,
    restart_dead_codes=True)

train_dataloader = dict(batch_size=64, num_workers=2)
val_evaluator = dict(type='ReconstructionMetric', num_codes=num_codes)
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='CPUBf16OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.99), weight_decay=0.0, fused=True))
max_iters = 1000
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=100, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=400)
val_cfg = dict()
test_cfg = dict()
