# A tiny MAGE-style token predictor trained from scratch on the ids of the
# tiny tokenizer (configs/vq_tokenizer/vq-tokenizer-tiny-f4_1xb64-1000i_demo.py),
# 64 ids per image over 512 codes.
_base_ = ['../_base_/datasets/demo_pretrain.py', '../_base_/demo_runtime.py']

# the trained tiny tokenizer (runner checkpoint or exported file)
tokenizer_checkpoint = 'work_dirs/vq-tokenizer-tiny-f4_1xb64-1000i_demo/iter_1000.pth'
num_codes = 512
model = dict(
    type='TokenPredictor',
    arch=dict(
        embed_dims=128,
        depth=4,
        num_heads=4,
        decoder_embed_dims=128,
        decoder_depth=2,
        decoder_num_heads=4),
    codebook_size=num_codes,
    num_classes=1,
    class_id=num_codes,
    num_tokens=64,
    drop_rate=0.0,
    encoder_drop=0.5,  # MAGE's drop of masked positions from the encoder (docs/demo_speed.md)
    label_smoothing=0.1,  # no dropout (docs/demo_schedules.md)
    mask_ratio=dict(mean=0.55, std=0.25, low=0.5, high=1.0),
    codebook_token_table=True,  # code rows from the codebook (docs/demo_schedules.md)
    tokenizer=dict(
        type='VQTokenizer',
        base_channels=32,
        channel_mults=(1, 2, 4),
        num_res_blocks=1,
        code_dim=32,
        num_codes=num_codes,
        norm_groups=8,
        checkpoint=tokenizer_checkpoint),
    # not MAGE's init at this width (docs/demo_schedules.md)
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
        dict(type='Normal', layer='Embedding', std=0.12)
    ])

train_dataloader = dict(batch_size=64, num_workers=2)
val_evaluator = dict(type='MaskedTokenAccuracy')
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='CPUBf16OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05, fused=True),
    paramwise_cfg=dict(flat_decay_mult=0.0))
max_iters = 2400
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=100, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict()
test_cfg = dict()
