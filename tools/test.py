"""Evaluate a checkpoint with a config of mmpretrain, mmdet or mmseg flavour;
prints the config's metrics (top-1, COCO AP, mIoU, ...) and writes them to
``WORK_DIR/test_metrics.json``."""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction
from mmengine.dist import is_main_process
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

import mmaddp  # noqa: F401
from mmaddp.checkpoint import filter_state_dict, load_state_into, read_state_dict, recognise_layout
from mmaddp.utils import (close_launch, exit_on_bad_input, load_tool_config, prepare_cpu_memory,
                          prepare_launch, save_test_metrics)


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument('--out', help='dump the raw predictions to this pickle file')
    parser.add_argument(
        '--show-dir',
        help='draw the predictions over every test image into this folder, through the '
        "config's visualization hook (mmpretrain / mmdet / mmseg's own --show-dir)")
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config (key=value)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_release_classifier(runner, state, path):
    """Load a converted release classifier into the runner's model; every
    tensor of the model must come from the file."""
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    result = load_state_into(model, state, f'Checkpoint {path}')
    missing = [k for k in result.missing_keys if not k.startswith('data_preprocessor.')]
    if missing or result.unexpected_keys:
        raise ValueError(f'Checkpoint {path} (a classifier fine-tuned by the ADDP release) does '
                         f'not match the config\'s model: missing {missing[:5]}, unexpected '
                         f'{result.unexpected_keys[:5]} (for the release, the backbone needs '
                         "out_type='avg_featmap', pre_norm=False, final_norm=False)")


def drop_training_parts(cfg) -> None:
    """Testing builds no training set: without this, a hook that reads
    ``runner.iter`` while testing (mmseg's ``SegVisualizationHook`` does, for
    the picture's step) makes the runner build the training loop, and with it
    the training dataset, which a machine holding only the test split lacks."""
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler'):
        cfg[key] = None


def draw_test_predictions(cfg, show_dir: str) -> None:
    """Turn on the config's visualization hook for every test image, writing
    the pictures under ``show_dir``, the way mmpretrain's, mmdet's and
    mmseg's own ``tools/test.py --show-dir`` do."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    kind = None if hook is None else hook.get('type')
    show_dir = osp.abspath(show_dir)
    if kind == 'VisualizationHook':  # mmpretrain: NAME_STEP.png in out_dir
        hook.update(enable=True, interval=1, out_dir=show_dir)
    elif kind == 'DetVisualizationHook':  # mmdet: one file per image in test_out_dir
        hook.update(draw=True, test_out_dir=show_dir)
    elif kind == 'SegVisualizationHook':  # mmseg: the visualizer's save_dir/vis_image
        hook.update(draw=True, interval=1)
        cfg.visualizer['save_dir'] = show_dir
    else:
        raise ValueError(f'--show-dir needs a visualization hook of mmpretrain, mmdet or mmseg '
                         f'in default_hooks; {cfg.filename} has {kind!r}')


def check_checkpoint_fits(cfg, state, path) -> None:
    """Refuse, before anything is built or written, a checkpoint that is
    not of the config's model: the runner would load it non-strictly, warn,
    and evaluate a half-initialised model. Every tensor the model has (its
    data preprocessor's constants aside) must be in the file, at the same
    shape."""
    from mmengine.registry import MODELS, DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(cfg.model)
    own = {
        k: v.shape
        for k, v in model.state_dict().items() if not k.startswith('data_preprocessor.')
    }
    missing = [k for k in own if k not in state]
    kind = recognise_layout(state) or 'an unrecognised layout'
    if missing:
        raise ValueError(f'Checkpoint {path} is not a checkpoint of this config\'s '
                         f'{type(model).__name__}: {len(missing)} of its {len(own)} tensors are '
                         f'missing (e.g. {missing[:3]}); the file looks like {kind}')
    wrong = [
        f'{k}: {tuple(state[k].shape)} vs {tuple(own[k])}' for k in own
        if tuple(state[k].shape) != tuple(own[k])
    ]
    if wrong:
        raise ValueError(f'Checkpoint {path} does not fit this config\'s {type(model).__name__} '
                         f'(another width or size?): {wrong[:3]}')


def main():
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'Checkpoint file not found: {args.checkpoint}')
    cfg = load_tool_config(args)
    # a classifier fine-tuned by the authors' code ('model' key, fc_norm,
    # head) is converted to ImageClassifier keys; anything else loads through
    # the runner as it is
    state = read_state_dict(args.checkpoint, mmap=True)  # mapped: cheap to look at
    release_state = None
    if recognise_layout(state) == 'release_classifier':
        release_state = filter_state_dict(state, 'release_classifier',
                                          f'Checkpoint {args.checkpoint}')
    else:
        check_checkpoint_fits(cfg, state, args.checkpoint)
    cfg.load_from = None if release_state is not None else args.checkpoint
    if args.out is not None:
        dump = dict(type='DumpResults', out_file_path=args.out)  # mmengine's metric
        evaluators = cfg.test_evaluator
        if isinstance(evaluators, (list, tuple)):
            cfg.test_evaluator = [*evaluators, dump]
        else:
            cfg.test_evaluator = [evaluators, dump]

    if args.show_dir is not None:
        draw_test_predictions(cfg, args.show_dir)
    drop_training_parts(cfg)

    prepare_launch(cfg)
    prepare_cpu_memory()
    runner = Runner.from_cfg(cfg)
    if release_state is not None:
        load_release_classifier(runner, release_state, args.checkpoint)
    metrics = runner.test()
    if is_main_process():
        metrics = save_test_metrics(runner.work_dir, args.config, args.checkpoint, metrics)
    print(metrics)
    close_launch()


if __name__ == '__main__':
    exit_on_bad_input(main)
