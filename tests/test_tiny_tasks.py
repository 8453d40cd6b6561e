"""The tiny downstream configs: Mask R-CNN trains with 2 CPU processes
(tools/dist_train.sh, gloo); evaluation metrics come out of tools/test.py."""
import ast
import json
import os
import os.path as osp
import subprocess
import sys

from test_addp_training import _free_port, logged_losses

from conftest import ROOT

DET_CFG = osp.join(ROOT, 'configs', 'mask_rcnn',
                   'mask-rcnn_addp-vit-nano-p4_simple-fpn_1xb8-500i_demo-64px.py')
ITERS = 40


def test_dist_train_tiny_coco_two_cpu_processes(tmp_path, demo_root):
    coco = osp.join(demo_root, 'coco') + '/'
    env = dict(
        os.environ,
        PORT=str(_free_port()),
        PYTHON=sys.executable,
        PYTHONPATH=ROOT,
        OMP_NUM_THREADS='1')
    work = tmp_path / 'det'
    ann = coco + 'annotations/instances_val2017.json'
    test_options = [
        f'test_dataloader.dataset.data_root={coco}', f'test_evaluator.ann_file={ann}',
        'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
        'model.test_cfg.rcnn.score_thr=0.0'
    ]  # 40 iterations: keep low scores too
    proc = subprocess.run([
        'bash', 'tools/dist_train.sh', DET_CFG, '2', '--work-dir',
        str(work), '--no-validate', '--test', '--cfg-options',
        f'train_dataloader.dataset.data_root={coco}', *test_options,
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False', 'model.backbone.init_cfg=None',
        f'train_cfg.max_iters={ITERS}', 'param_scheduler.0.end=10',
        f'param_scheduler.1.end={ITERS}', f'param_scheduler.1.milestones=[{ITERS}]',
        f'default_hooks.checkpoint.interval={ITERS}', 'default_hooks.logger.interval=10'
    ],
                          cwd=ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=1200)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    losses = logged_losses(work)
    assert [i for i, _ in losses] == list(range(10, ITERS + 1, 10))
    first, last = losses[0][1], losses[-1][1]
    print(f'Mask R-CNN tiny loss (2 processes) {first:.3f} -> {last:.3f}')
    assert last < 0.8 * first
    ckpt = work / f'iter_{ITERS}.pth'
    assert ckpt.is_file()

    # tools/test.py prints COCO AP and writes it to the work dir
    test_dir = tmp_path / 'test'
    proc = subprocess.run([
        sys.executable, 'tools/test.py', DET_CFG,
        str(ckpt), '--work-dir',
        str(test_dir), '--cfg-options', *test_options, 'model.backbone.init_cfg=None'
    ],
                          cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True,
                          text=True,
                          timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    record = json.loads((test_dir / 'test_metrics.json').read_text())
    assert record['checkpoint'] == str(ckpt)
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'):
        assert 0.0 <= record['metrics'][key] <= 1.0
    assert ast.literal_eval(proc.stdout.strip().splitlines()[-1]) == record['metrics']
    # train.py --test evaluated the final weights in the training processes:
    # the same numbers as tools/test.py from the last checkpoint
    trained = json.loads((work / 'test_metrics.json').read_text())
    assert trained['checkpoint'] == str(ckpt)
    assert trained['metrics'] == record['metrics']
