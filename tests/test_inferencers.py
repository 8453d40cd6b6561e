"""The ecosystem's own inferencers on mmaddp's demo configs (random-weight
checkpoints): mmpretrain's ImageClassificationInferencer, mmdet's
DetInferencer and mmseg's MMSegInferencer return predictions of the right
kind, agree with the model run by hand, and write their pictures."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from PIL import Image

from mmaddp.registry import MODELS
from conftest import ROOT

CLS_CFG = osp.join(ROOT, 'configs', 'imagenet', 'addp-vit-nano-p4_1xb64-6000i_demo.py')
DET_CFG = osp.join(ROOT, 'configs', 'mask_rcnn',
                   'mask-rcnn_addp-vit-nano-p4_simple-fpn_1xb8-500i_demo-64px.py')
SEG_CFG = osp.join(ROOT, 'configs', 'upernet', 'upernet_addp-vit-nano-p4_1xb8-1400i_demo-64x64.py')


def _random_checkpoint(config, path, seed=0):
    """The config's model with its own random init (no pretrained backbone),
    saved as a runner checkpoint; returns the built model too."""
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    cfg.model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))  # as runners do
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    torch.manual_seed(seed)
    model.init_weights()
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return model.eval()


def _image(path, size, seed=0):
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    array[size // 4:size // 2, size // 4:size // 2] = (250, 40, 40)  # a red square
    Image.fromarray(array).save(path)
    return array


def test_image_classification_inferencer(tmp_path):
    from mmpretrain import ImageClassificationInferencer
    ckpt = tmp_path / 'cls.pth'
    model = _random_checkpoint(CLS_CFG, ckpt)
    array = _image(tmp_path / 'digit.png', 32)
    inferencer = ImageClassificationInferencer(CLS_CFG, pretrained=str(ckpt), device='cpu')
    (result, ) = inferencer(str(tmp_path / 'digit.png'), show_dir=str(tmp_path / 'vis'))
    scores = np.asarray(result['pred_scores'])
    assert scores.shape == (10, ) and abs(scores.sum() - 1) < 1e-5
    assert result['pred_label'] == int(scores.argmax())
    # the same image through the model by hand: 32 px already, so the test
    # pipeline's resize keeps it; BGR as mmcv loads it (the preprocessor flips)
    inputs = torch.from_numpy(array[..., ::-1].copy()).permute(2, 0, 1)
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=[inputs]), False)
        expect = model(data['inputs'], mode='tensor').softmax(-1)[0]
    np.testing.assert_allclose(scores, expect.numpy(), atol=1e-5)
    picture = np.array(Image.open(tmp_path / 'vis' / 'digit.png'))
    assert picture.ndim == 3 and picture.shape[2] == 3
    assert not np.array_equal(picture[..., :3], array)  # the prediction is drawn on it


def test_det_inferencer(tmp_path):
    from mmdet.apis import DetInferencer
    ckpt = tmp_path / 'det.pth'
    _random_checkpoint(DET_CFG, ckpt)
    _image(tmp_path / 'scene.jpg', 128)
    inferencer = DetInferencer(DET_CFG, weights=str(ckpt), device='cpu', show_progress=False)
    result = inferencer(
        str(tmp_path / 'scene.jpg'), out_dir=str(tmp_path / 'out'), no_save_pred=False)
    (pred, ) = result['predictions']
    assert {'labels', 'scores', 'bboxes', 'masks'} <= set(pred)
    n = len(pred['labels'])
    assert n > 0 and len(pred['scores']) == len(pred['bboxes']) == len(pred['masks']) == n
    assert all(0 <= label < 10 for label in pred['labels'])
    boxes = np.asarray(pred['bboxes'])
    assert boxes.shape == (n, 4) and (boxes[:, 2:] >= boxes[:, :2]).all()
    assert boxes.min() >= 0 and boxes.max() <= 128  # in the input image's pixels
    picture = np.array(Image.open(tmp_path / 'out' / 'vis' / 'scene.jpg'))
    assert picture.shape == (128, 128, 3)
    assert osp.isfile(tmp_path / 'out' / 'preds' / 'scene.json')


def test_mmseg_inferencer(tmp_path):
    from mmseg.apis import MMSegInferencer
    ckpt = tmp_path / 'seg.pth'
    model = _random_checkpoint(SEG_CFG, ckpt)
    _image(tmp_path / 'scene.png', 128)
    inferencer = MMSegInferencer(SEG_CFG, weights=str(ckpt), device='cpu')
    result = inferencer(str(tmp_path / 'scene.png'), out_dir=str(tmp_path / 'out'))
    pred = np.asarray(result['predictions'])
    assert pred.shape == (128, 128)  # back at the input's size
    num_classes = model.decode_head.num_classes
    assert pred.min() >= 0 and pred.max() < num_classes
    picture = np.array(Image.open(tmp_path / 'out' / 'vis' / 'scene.png'))
    assert picture.shape[:2] == (128, 128)
    (mask_file, ) = (tmp_path / 'out' / 'pred').iterdir()  # mmseg names it by index
    np.testing.assert_array_equal(np.array(Image.open(mask_file)), pred)


def test_ecosystem_inferencers_refuse_a_missing_checkpoint(tmp_path):
    from mmpretrain import ImageClassificationInferencer
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        ImageClassificationInferencer(CLS_CFG, pretrained=str(tmp_path / 'nope.pth'))


@pytest.mark.parametrize('config', [CLS_CFG, DET_CFG, SEG_CFG])
def test_tools_read_test_images_through_the_checked_loader(tmp_path, config):
    """The configs name the loader the inferencers replace; the tools swap in
    the checked one, which names a corrupt file."""
    from mmcv.transforms import BaseTransform

    from mmaddp.utils import check_image_loading
    cfg = Config.fromfile(config)
    assert cfg.test_dataloader.dataset.pipeline[0].type == 'LoadImageFromFile'
    assert check_image_loading(cfg) >= 1
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loaders = [t.type for t in cfg[key].dataset.pipeline if 'Load' in t.type]
        assert 'LoadImageFromFile' not in loaders, key
    assert cfg.test_dataloader.dataset.pipeline[0].type == 'CheckedLoadImageFromFile'
    from mmaddp.registry import TRANSFORMS
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        loader = TRANSFORMS.build(cfg.test_dataloader.dataset.pipeline[0])
    assert isinstance(loader, BaseTransform)
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'\xff\xd8\xff\xe0 truncated')
    with pytest.raises(ValueError, match='broken.jpg'):
        loader(dict(img_path=str(bad)))
