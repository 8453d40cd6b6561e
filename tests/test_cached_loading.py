"""CachedLoadImageFromFile: decoded once per process, copies handed out."""
import cv2
import numpy as np
import pytest
from mmpretrain.registry import TRANSFORMS

import mmaddp  # noqa: F401


def _write(path, value):
    img = np.full((8, 6, 3), value, np.uint8)
    img[0, 0] = (1, 2, 3)
    assert cv2.imwrite(str(path), img)
    return img


def test_second_read_comes_from_memory_as_a_copy(tmp_path):
    path = tmp_path / 'a.png'
    first = _write(path, 10)
    load = TRANSFORMS.build(dict(type='CachedLoadImageFromFile'))
    out = load(dict(img_path=str(path)))
    np.testing.assert_array_equal(out['img'], first)
    assert out['img_shape'] == out['ori_shape'] == (8, 6)
    out['img'][:] = 0  # a later transform writing in place
    _write(path, 200)  # the file changes: the process keeps what it decoded
    again = load(dict(img_path=str(path)))
    np.testing.assert_array_equal(again['img'], first)
    assert again['img_shape'] == (8, 6)
    assert load.cached_bytes == first.nbytes


def test_cache_limit_and_unreadable_files(tmp_path):
    path = tmp_path / 'a.png'
    _write(path, 10)
    load = TRANSFORMS.build(dict(type='CachedLoadImageFromFile', max_cache_mb=0))
    load(dict(img_path=str(path)))
    newer = _write(path, 200)  # nothing cached beyond the limit: read again
    np.testing.assert_array_equal(load(dict(img_path=str(path)))['img'], newer)
    assert load.cache == {}

    bad = tmp_path / 'bad.png'
    bad.write_bytes(b'not an image')
    load = TRANSFORMS.build(dict(type='CachedLoadImageFromFile'))
    for _ in range(2):  # fails every time, never cached
        with pytest.raises(Exception, match='bad.png'):
            load(dict(img_path=str(bad)))
    assert load.cache == {}
    skip = TRANSFORMS.build(dict(type='CachedLoadImageFromFile', ignore_empty=True))
    assert skip(dict(img_path=str(tmp_path / 'missing.png'))) is None
