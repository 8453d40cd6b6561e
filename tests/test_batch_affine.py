"""BatchRandomAffine: the demo classification's batched rotate / shear /
resized-crop augmentation, checked against exact geometric references."""
import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from mmaddp.models.utils import BatchRandomAffine
from conftest import ROOT


def _fixed(**kwargs):
    """An augmentation whose every range is one value (no randomness left
    except the crop position, which a full-size crop pins)."""
    args = dict(rotate=(0., 0.), shear=(0., 0.), crop_area=(1., 1.), crop_aspect=(1., 1.))
    args.update(kwargs)
    return BatchRandomAffine(**args)


def _ramp(n=2, size=16, axis=-1):
    """Images whose value is the pixel's column (axis=-1) or row (axis=-2)."""
    coords = torch.arange(size, dtype=torch.float32)
    img = coords.view(1, size) if axis == -1 else coords.view(size, 1)
    return img.expand(size, size).expand(n, 3, size, size).clone()


def test_identity_and_labels_pass_through():
    x = torch.randn(4, 3, 12, 12)
    labels = torch.eye(4)
    out, out_labels = _fixed()(x, labels)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    assert out_labels is labels


def test_rotation_by_90_degrees_is_rot90():
    x = torch.randn(3, 2, 8, 8)
    out, _ = _fixed(rotate=(90., 90.))(x, None)
    # positive angles turn the image clockwise (mmcv.imrotate's convention)
    torch.testing.assert_close(out, torch.rot90(x, k=-1, dims=(2, 3)), atol=1e-4, rtol=0)


def test_shear_slants_columns_by_the_shear_factor():
    size, s = 16, 0.25
    out, _ = _fixed(shear=(s, s))(_ramp(size=size), None)
    # forward shear x' = x + s * y: output column x reads input column x - s * y,
    # so on the (unpadded) middle rows value(x, y) = x - s * (y - centre)
    inner = out[0, 0, 4:12, 6:10]
    d_row = (inner[1:] - inner[:-1]).mean()
    d_col = (inner[:, 1:] - inner[:, :-1]).mean()
    assert d_col.item() == pytest.approx(1.0, abs=1e-4)
    assert d_row.item() == pytest.approx(-s, abs=1e-4)


@pytest.mark.parametrize('area,aspect', [(0.25, 1.0), (0.5, 2.0)])
def test_crop_magnifies_by_the_crop_size(area, aspect):
    size = 32
    crop_w, crop_h = (area * aspect)**0.5, (area / aspect)**0.5
    aug = _fixed(crop_area=(area, area), crop_aspect=(aspect, aspect))
    torch.manual_seed(0)
    cols, _ = aug(_ramp(n=8, size=size, axis=-1), None)
    rows, _ = aug(_ramp(n=8, size=size, axis=-2), None)
    # one output pixel steps crop_w (crop_h) input pixels, and the window stays inside
    step_x = (cols[..., 1:] - cols[..., :-1])[..., 1:-1, 1:-1]
    step_y = (rows[..., 1:, :] - rows[..., :-1, :])[..., 1:-1, 1:-1]
    torch.testing.assert_close(step_x, torch.full_like(step_x, crop_w), atol=1e-4, rtol=0)
    torch.testing.assert_close(step_y, torch.full_like(step_y, crop_h), atol=1e-4, rtol=0)
    assert cols.min() >= -0.5 and cols.max() <= size - 0.5
    # the crop positions differ between images of the batch
    corners = torch.stack([cols[:, 0, 0, 0], rows[:, 0, 0, 0]], 1)
    assert corners.unique(dim=0).shape[0] > 1


def test_draws_stay_in_their_ranges():
    aug = BatchRandomAffine(
        rotate=(-10., 10.), shear=(0., 0.), crop_area=(1., 1.), crop_aspect=(1., 1.))
    torch.manual_seed(0)
    theta = aug.sample_matrices(512, 16, 16)
    # a pure rotation: the 2 x 2 part is orthonormal, its angle within +-10 degrees
    angle = torch.rad2deg(torch.atan2(theta[:, 1, 0], theta[:, 0, 0]))
    assert angle.abs().max() <= 10.0 + 1e-4
    assert angle.min() < -8 and angle.max() > 8  # drawn over the range, not fixed
    torch.testing.assert_close(theta[:, :, 2], torch.zeros(512, 2), atol=1e-6, rtol=0)


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match='crop_area'):
        BatchRandomAffine(crop_area=(0.5, 1.5))
    with pytest.raises(ValueError, match='rotate'):
        BatchRandomAffine(rotate=(10., -10.))
    with pytest.raises(ValueError, match='mode'):
        BatchRandomAffine(mode='nearest-exact')
    with pytest.raises(ValueError, match='B x C x H x W'):
        BatchRandomAffine()(torch.zeros(3, 8, 8), None)


def test_demo_classification_config_augments_in_the_preprocessor():
    """The few-label classification config trains with BatchRandomAffine through
    mmpretrain's ClsDataPreprocessor: it changes training batches, not
    evaluation ones."""
    cfg = Config.fromfile(
        f'{ROOT}/configs/imagenet/addp-vit-nano-p4_1xb64-1000i_demo-100-per-class.py')
    # the all-label config has no batch augments (docs/demo_schedules.md)
    assert Config.fromfile(f'{ROOT}/configs/imagenet/addp-vit-nano-p4_1xb64-6000i_demo.py'
                           ).data_preprocessor.get('batch_augments') is None
    assert cfg.data_preprocessor.type == 'ClsDataPreprocessor'
    pre = MODELS.build(cfg.data_preprocessor)
    batch = dict(
        inputs=torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8),
        data_samples=[DataSample().set_gt_label(i) for i in range(4)])
    torch.manual_seed(0)
    train = pre(batch, training=True)['inputs']
    test = pre(batch, training=False)['inputs']
    assert train.shape == test.shape == (4, 3, 32, 32)
    assert (train - test).abs().mean() > 0.1
    normalised = (batch['inputs'].flip(1).float() - torch.tensor(cfg.data_preprocessor.mean).view(
        1, 3, 1, 1)) / torch.tensor(cfg.data_preprocessor.std).view(1, 3, 1, 1)
    torch.testing.assert_close(test, normalised)
