"""Pictures where people look: the detection and segmentation configs draw
their val predictions through mmdet's / mmseg's visualization hooks, and
``tools/test.py --show-dir`` draws every test image (classification,
detection, segmentation) the way the ecosystem's own test tools do."""
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config
from PIL import Image
from test_inferencers import CLS_CFG, DET_CFG, SEG_CFG, _random_checkpoint

from conftest import ROOT, build_runner

DRAWING_CONFIGS = {
    'DetVisualizationHook': sorted(glob.glob(osp.join(ROOT, 'configs', 'mask_rcnn', '*.py'))),
    'SegVisualizationHook': sorted(glob.glob(osp.join(ROOT, 'configs', 'upernet', '*.py'))),
}


def _pictures(folder):
    """Image files under ``folder`` (mmdet keeps the source's name and suffix)."""
    found = glob.glob(osp.join(str(folder), '**', '*'), recursive=True)
    return sorted(f for f in found if f.endswith(('.png', '.jpg')))


def _data_options(config, demo_root):
    """--cfg-options pointing a demo config's test split at the bundled data,
    with no worker processes."""
    if config == CLS_CFG:
        root, extra = osp.join(demo_root, 'imagenet') + '/', []
    elif config == DET_CFG:
        root = osp.join(demo_root, 'coco') + '/'
        extra = [f'test_evaluator.ann_file={root}annotations/instances_val2017.json']
    else:
        root, extra = osp.join(demo_root, 'ade') + '/', []
    return [
        f'test_dataloader.dataset.data_root={root}', 'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False', 'test_dataloader.batch_size=2',
        'model.backbone.init_cfg=None', *extra
    ]


@pytest.mark.parametrize(
    'hook,config', [(h, c) for h, cs in DRAWING_CONFIGS.items() for c in cs],
    ids=lambda v: osp.basename(v)[:40])
def test_dense_configs_draw_val_predictions(hook, config):
    cfg = Config.fromfile(config)
    vis = cfg.default_hooks.visualization
    assert vis.type == hook and vis.draw is True and vis.interval >= 1
    # the ecosystem's visualizer of the task writes what the hook draws
    assert cfg.visualizer.type == {
        'DetVisualizationHook': 'DetLocalVisualizer',
        'SegVisualizationHook': 'SegLocalVisualizer'
    }[hook]


@pytest.mark.parametrize('config', [DET_CFG, SEG_CFG], ids=['mask_rcnn', 'upernet'])
def test_demo_validation_writes_prediction_pictures(tmp_path, demo_root, config):
    """A val pass of the demo config (random weights) leaves the hook's
    pictures in the run's vis_data folder, at the data's size."""
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    cfg.work_dir = str(tmp_path)
    options = dict(o.split('=', 1) for o in _data_options(config, demo_root))
    root = options['test_dataloader.dataset.data_root']
    cfg.val_dataloader.update(num_workers=0, persistent_workers=False, batch_size=1)
    cfg.val_dataloader.dataset.update(data_root=root, indices=8)
    if config == DET_CFG:
        cfg.val_evaluator.ann_file = options['test_evaluator.ann_file']
    cfg.default_hooks.visualization.interval = 4  # val batches 0 and 4
    # validation alone: no training set (the hooks' step would build its loop)
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler'):
        cfg[key] = None
    runner = build_runner(cfg)
    runner.val()
    pictures = _pictures(osp.join(str(tmp_path), runner.timestamp, 'vis_data'))
    assert len(pictures) == 2, pictures
    width, height = Image.open(pictures[0]).size
    assert width == 2 * height, (width, height)  # ground truth beside the prediction


@pytest.mark.parametrize(
    'config', [CLS_CFG, DET_CFG, SEG_CFG], ids=['classification', 'mask_rcnn', 'upernet'])
def test_show_dir_draws_every_test_image(tmp_path, demo_root, config):
    ckpt = tmp_path / 'random.pth'
    _random_checkpoint(config, ckpt)
    subset = tmp_path / osp.basename(config)  # the first four test images
    subset.write_text(f"_base_ = ['{config}']\ntest_dataloader = dict(dataset=dict(indices=4))\n")
    show = tmp_path / 'show'
    proc = subprocess.run([
        sys.executable, 'tools/test.py',
        str(subset),
        str(ckpt), '--work-dir',
        str(tmp_path / 'work'), '--show-dir',
        str(show), '--cfg-options', *_data_options(config, demo_root)
    ],
                          cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1'),
                          capture_output=True,
                          text=True,
                          timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    pictures = _pictures(show)
    assert len(pictures) == 4, pictures
    assert (tmp_path / 'work' / 'test_metrics.json').is_file()


def test_show_dir_refuses_a_config_without_a_visualization_hook(tmp_path):
    config = tmp_path / 'no_vis.py'
    config.write_text(f"_base_ = ['{CLS_CFG}']\ndefault_hooks = dict(visualization=None)\n")
    ckpt = tmp_path / 'random.pth'
    _random_checkpoint(CLS_CFG, ckpt)
    proc = subprocess.run([
        sys.executable, 'tools/test.py',
        str(config),
        str(ckpt), '--show-dir',
        str(tmp_path / 'show')
    ],
                          cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True,
                          text=True,
                          timeout=600)
    assert proc.returncode != 0
    assert '--show-dir needs a visualization hook' in proc.stderr, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
