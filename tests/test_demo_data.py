"""The bundled demo data: layouts load in pycocotools, mmdet, mmseg and
mmpretrain; builds are deterministic; the evaluation path scores the ground
truth perfectly."""
import filecmp
import json
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from demo.demo_data import SIZES, build_demo_data

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BASE = osp.join(ROOT, 'configs', '_base_', 'datasets')
SMALL = dict(pretrain=(20, 10), imagenet=(20, 10), coco=(6, 4), ade=(6, 4))


def dataset_cfg(name, key, data_root):
    cfg = Config.fromfile(osp.join(BASE, name))
    ds = cfg[key].dataset
    ds.data_root = data_root
    return cfg, ds


def test_coco_files_valid(demo_root):
    from pycocotools.coco import COCO
    for split, n_img in (('train', SIZES['coco'][0]), ('val', SIZES['coco'][1])):
        coco = COCO(osp.join(demo_root, 'coco', 'annotations', f'instances_{split}2017.json'))
        assert len(coco.getImgIds()) == n_img
        assert sorted(c['name']
                      for c in coco.loadCats(coco.getCatIds())) == [str(i) for i in range(10)]
        anns = coco.loadAnns(coco.getAnnIds())
        assert len(anns) >= 2 * n_img * 0.9
        for ann in anns:
            mask = coco.annToMask(ann)
            x, y, w, h = ann['bbox']
            assert ann['iscrowd'] == 0 and ann['area'] == mask.sum() > 0
            inside = np.zeros_like(mask)
            inside[y:y + h, x:x + w] = 1
            assert mask[inside == 0].sum() == 0  # mask lies inside its box
            ys, xs = np.nonzero(mask)  # and the box is tight
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
        img = coco.loadImgs(coco.getImgIds()[0])[0]
        assert Image.open(osp.join(demo_root, 'coco', f'{split}2017',
                                   img['file_name'])).size == (img['width'], img['height'])


def test_mmdet_coco_dataset(demo_root):
    from mmdet.registry import DATASETS
    init_default_scope('mmdet')
    _, ds_cfg = dataset_cfg('demo_coco_instance.py', 'train_dataloader',
                            osp.join(demo_root, 'coco') + '/')
    dataset = DATASETS.build(ds_cfg)
    assert len(dataset) == SIZES['coco'][0]
    sample = dataset[0]
    inst = sample['data_samples'].gt_instances
    assert len(inst) >= 2 and inst.labels.max() < 10
    assert inst.masks.masks.shape[1:] == tuple(sample['inputs'].shape[1:])


def test_mmseg_dataset(demo_root):
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    _, ds_cfg = dataset_cfg('demo_ade20k.py', 'val_dataloader', osp.join(demo_root, 'ade'))
    dataset = DATASETS.build(ds_cfg)
    assert len(dataset) == SIZES['ade'][1]
    assert dataset.metainfo['classes'][0] == 'background' and len(dataset.metainfo['classes']) == 11
    labels = set()
    for i in range(0, len(dataset), 10):
        seg = dataset[i]['data_samples'].gt_sem_seg.data
        labels |= set(torch.unique(seg).tolist())
    assert 0 in labels and labels <= set(range(11)) and len(labels) > 5


def test_mmpretrain_classification(demo_root):
    from mmpretrain.registry import DATASETS
    init_default_scope('mmpretrain')
    for key, n in (('train_dataloader', SIZES['imagenet'][0]), ('val_dataloader',
                                                                SIZES['imagenet'][1])):
        _, ds_cfg = dataset_cfg('demo_imagenet.py', key, osp.join(demo_root, 'imagenet'))
        dataset = DATASETS.build(ds_cfg)
        assert len(dataset) == n and dataset.CLASSES == tuple(str(i) for i in range(10))
        counts = np.bincount(
            [int(dataset.get_data_info(i)["gt_label"]) for i in range(len(dataset))])
        assert (counts == n // 10).all()
        assert dataset[0]['inputs'].shape == (3, 32, 32)
    _, ds_cfg = dataset_cfg('demo_pretrain.py', 'train_dataloader', osp.join(demo_root, 'pretrain'))
    assert len(DATASETS.build(ds_cfg)) == SIZES['pretrain'][0]


def test_train_val_use_disjoint_digits(demo_root):
    with open(osp.join(demo_root, 'sources.json')) as f:
        manifest = json.load(f)
    train_pool, val_pool = set(manifest['pools']['train']), set(manifest['pools']['val'])
    assert not train_pool & val_pool and len(train_pool | val_pool) == 1797
    for key, entries in manifest.items():
        if key in ('seed', 'pools'):
            continue
        used = {s for srcs in entries.values() for s in srcs}
        pool = train_pool if key.endswith('train') else val_pool
        assert used and used <= pool, key


def _all_files(root):
    return sorted(osp.relpath(osp.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_builds_are_deterministic(tmp_path):
    """Same seed, same bytes, whether the parts are built in one process or in
    parallel; another seed, other images."""
    a, b, c = (str(tmp_path / n) for n in 'abc')
    build_demo_data(a, seed=3, sizes=SMALL, workers=2)
    build_demo_data(b, seed=3, sizes=SMALL, workers=1)
    build_demo_data(c, seed=4, sizes=SMALL, workers=2)
    files = _all_files(a)
    assert files == _all_files(b) and len(files) > 80
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors
    _, mismatch, _ = filecmp.cmpfiles(a, c, files, shallow=False)
    assert len(mismatch) > len(files) // 2
    with pytest.raises(FileExistsError, match='already exists'):
        build_demo_data(a, seed=3, sizes=SMALL)


def test_coco_metric_oracle(demo_root):
    """Ground truth fed back as predictions scores AP 1.0 (boxes and masks)."""
    from mmdet.evaluation import CocoMetric
    from pycocotools.coco import COCO
    ann_file = osp.join(demo_root, 'coco', 'annotations', 'instances_val2017.json')
    coco = COCO(ann_file)
    metric = CocoMetric(ann_file=ann_file, metric=['bbox', 'segm'])
    metric.dataset_meta = dict(classes=tuple(str(i) for i in range(10)))
    samples = []
    for img_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        info = coco.loadImgs(img_id)[0]
        boxes = torch.tensor(
            [[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2], a['bbox'][1] + a['bbox'][3]]
             for a in anns],
            dtype=torch.float32)
        samples.append(
            dict(
                img_id=img_id,
                ori_shape=(info['height'], info['width']),
                pred_instances=dict(
                    bboxes=boxes,
                    scores=torch.ones(len(anns)),
                    labels=torch.tensor([a['category_id'] - 1 for a in anns]),
                    masks=torch.from_numpy(np.stack([coco.annToMask(a) for a in anns])).bool())))
    metric.process({}, samples)
    results = metric.compute_metrics(metric.results)
    assert results['bbox_mAP'] == pytest.approx(1.0)
    assert results['segm_mAP'] == pytest.approx(1.0)


def test_iou_metric_oracle(demo_root):
    from mmseg.evaluation import IoUMetric
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=tuple(['background'] + [str(i) for i in range(10)]))
    folder = osp.join(demo_root, 'ade', 'annotations', 'validation')
    samples = []
    for name in sorted(os.listdir(folder)):
        label = torch.from_numpy(np.array(Image.open(osp.join(folder, name)))).long()[None]
        samples.append(dict(pred_sem_seg=dict(data=label), gt_sem_seg=dict(data=label)))
    metric.process({}, samples)
    assert metric.compute_metrics(metric.results)['mIoU'] == pytest.approx(100.0)
