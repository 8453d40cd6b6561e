# Runtime of the iteration-based demo configs (2 CPU cores, minutes).
_base_ = ['mmpretrain::_base_/default_runtime.py']
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmaddp'], allow_failed_imports=False)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(
        type='AtomicCheckpointHook', interval=400, by_epoch=False, max_keep_ckpts=2,
        save_last=True))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
# stop at a NaN / inf loss before it is saved; random draws fixed per iteration (exact resume)
custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='IterationSeedHook')]
