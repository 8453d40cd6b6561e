"""Build the bundled demo data from real images shipped by scikit-learn.

Objects are scikit-learn's 1,797 handwritten digit scans (``load_digits``,
8 x 8, 17 grey levels); backgrounds are crops of its two sample photographs
(``load_sample_images``: china.jpg, flower.jpg) with flips and colour changes.
Nothing here exists in an OpenMMLab package, so it is written by hand.

Layout under ``out`` (the same file names as the real datasets, so a config
switches by ``data_root``)::

    pretrain/{train,val}/CLASS/*.png       ImageNet-style corpus, 32 px
    imagenet/{train,val}/CLASS/*.png       classification, 10 classes, 32 px
    coco/annotations/instances_{train,val}2017.json, coco/{train,val}2017/*.jpg
    ade/images/{training,validation}/*.jpg, ade/annotations/{...}/*.png

Train and val draw their digits from disjoint parts of the 1,797 scans
(70 % / 30 %, stratified by class); ``sources.json`` records the scans behind
every image. Everything is a function of ``seed``: two builds with the same
seed are byte-identical.
"""
import json
import multiprocessing
import os
import os.path as osp
import shutil
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

from mmaddp.datasets.digits_seg import DIGIT_CLASSES

#: image counts of each part (train, val)
SIZES = dict(pretrain=(5000, 500), imagenet=(30000, 500), coco=(2000, 100), ade=(2000, 100))
SMALL_SIZE = 32  # pretraining and classification images
SCENE_SIZE = 128  # detection and segmentation images
MAX_OBJECTS = 4


# ------------------------------------------------------------------ sources
def load_sources():
    """The digit scans (N x 8 x 8 in [0, 1]), labels and the two photos (PIL
    images: ``background`` crops them without copying a numpy view first)."""
    from sklearn.datasets import load_digits, load_sample_images
    digits = load_digits()
    photos = [
        Image.fromarray(np.asarray(img, dtype=np.uint8)) for img in load_sample_images().images
    ]
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64), photos


def split_digits(labels: np.ndarray, seed: int, val_fraction: float = 0.3):
    """Stratified split of digit indices into disjoint train / val pools."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(len(idx) * val_fraction))
        val.extend(idx[:n_val].tolist())
        train.extend(idx[n_val:].tolist())
    return np.array(sorted(train)), np.array(sorted(val))


def background(rng: np.random.Generator, photos, size: int) -> np.ndarray:
    """A random crop of a photo, resized to size x size, flipped and recoloured."""
    photo = photos[rng.integers(len(photos))]
    w, h = photo.size
    side = int(rng.integers(min(h, w) // 6, min(h, w) // 2))
    y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
    # PIL's crop gives the pixels of the numpy slice without its strided copy
    # (that copy was about a quarter of the time of the 32 px images)
    crop = photo.crop((x, y, x + side, y + side)).resize((size, size), Image.BILINEAR)
    img = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = img[:, :, rng.permutation(3)] * rng.uniform(0.6, 1.1)  # channel swap, brightness
    return np.clip(img, 0, 255)


def digit_alpha(scan: np.ndarray, size: int) -> np.ndarray:
    """An 8 x 8 scan upsampled to size x size (bicubic), as opacity in [0, 1]."""
    up = Image.fromarray((scan * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return np.clip((np.asarray(up, dtype=np.float32) / 255 - 0.25) / 0.35, 0, 1)


def paste(img: np.ndarray, alpha: np.ndarray, y: int, x: int, rng) -> np.ndarray:
    """Blend a digit in a colour that contrasts with the area under it; return
    its full-size binary mask (the stroke pixels, alpha > 0.5)."""
    s = alpha.shape[0]
    region = img[y:y + s, x:x + s]
    mean = region.reshape(-1, 3).mean(0)
    colour = np.where(mean > 127, rng.uniform(0, 60, 3), rng.uniform(195, 255, 3))
    img[y:y + s, x:x + s] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
    mask = np.zeros(img.shape[:2], dtype=np.uint8)
    mask[y:y + s, x:x + s] = alpha > 0.5
    return mask


# --------------------------------------------------------------- writers
def _save_png(array: np.ndarray, path: str):
    Image.fromarray(array).save(path, format='PNG', optimize=False)


def _save_jpg(array: np.ndarray, path: str):
    Image.fromarray(array).save(path, format='JPEG', quality=95)


def single_digit_images(out: str, pool: np.ndarray, count: int, scans, labels, photos,
                        rng) -> Dict[str, List[int]]:
    """``count`` images of one digit each, in ``out/CLASS/NNNNN.png``; returns
    the source scan index of every file."""
    sources = {}
    for c in range(10):
        os.makedirs(osp.join(out, DIGIT_CLASSES[c]), exist_ok=True)
    by_class = [pool[labels[pool] == c] for c in range(10)]
    for i in range(count):
        c = i % 10  # balanced classes
        src = by_class[c][rng.integers(len(by_class[c]))]
        img = background(rng, photos, SMALL_SIZE)
        size = int(rng.integers(18, 29))
        y, x = (int(v) for v in rng.integers(0, SMALL_SIZE - size + 1, 2))
        paste(img, digit_alpha(scans[src], size), y, x, rng)
        name = f'{DIGIT_CLASSES[c]}/{i:05d}.png'
        _save_png(img.astype(np.uint8), osp.join(out, name))
        sources[name] = [int(src)]
    return sources


def make_scene(pool, scans, labels, photos, rng) -> Tuple[np.ndarray, List[dict]]:
    """A SCENE_SIZE image with 2-4 non-overlapping digits and their masks."""
    img = background(rng, photos, SCENE_SIZE)
    boxes, objects = [], []
    for _ in range(int(rng.integers(2, MAX_OBJECTS + 1))):
        for _try in range(50):
            size = int(rng.integers(24, 49))
            y, x = (int(v) for v in rng.integers(0, SCENE_SIZE - size + 1, 2))
            if all(x + size + 2 <= bx or bx + bs + 2 <= x or y + size + 2 <= by or by + bs + 2 <= y
                   for by, bx, bs in boxes):
                break
        else:
            continue
        src = pool[rng.integers(len(pool))]
        mask = paste(img, digit_alpha(scans[src], size), y, x, rng)
        if mask.sum() < 16:
            continue
        boxes.append((y, x, size))
        objects.append(dict(label=int(labels[src]), mask=mask, source=int(src)))
    return img.astype(np.uint8), objects


def coco_annotation(mask: np.ndarray, label: int, ann_id: int, image_id: int) -> dict:
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(mask))
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=label + 1,
        iscrowd=0,
        area=int(mask.sum()),
        bbox=[x0, y0, x1 - x0, y1 - y0],
        segmentation=dict(size=list(rle['size']), counts=rle['counts'].decode('ascii')))


def scenes(out_coco: str, out_ade: str, split: str, pool, count: int, scans, labels, photos,
           rng) -> dict:
    """Write ``count`` scenes in COCO (instances) and ADE20K (label maps) layout."""
    coco_split, ade_split = f'{split}2017', 'training' if split == 'train' else 'validation'
    for d in (osp.join(out_coco, coco_split), osp.join(out_coco, 'annotations'),
              osp.join(out_ade, 'images', ade_split), osp.join(out_ade, 'annotations', ade_split)):
        os.makedirs(d, exist_ok=True)
    images, annotations, sources = [], [], {}
    for i in range(count):
        img, objects = make_scene(pool, scans, labels, photos, rng)
        name = f'{split}_{i:05d}'
        sources[f'{name}.jpg'] = [obj['source'] for obj in objects]
        _save_jpg(img, osp.join(out_coco, coco_split, f'{name}.jpg'))
        _save_jpg(img, osp.join(out_ade, 'images', ade_split, f'{name}.jpg'))
        images.append(dict(id=i + 1, file_name=f'{name}.jpg', height=SCENE_SIZE, width=SCENE_SIZE))
        seg = np.zeros((SCENE_SIZE, SCENE_SIZE), dtype=np.uint8)
        for obj in objects:
            annotations.append(
                coco_annotation(obj['mask'], obj['label'],
                                len(annotations) + 1, i + 1))
            seg[obj['mask'] > 0] = obj['label'] + 1
        _save_png(seg, osp.join(out_ade, 'annotations', ade_split, f'{name}.png'))
    categories = [dict(id=c + 1, name=DIGIT_CLASSES[c], supercategory='digit') for c in range(10)]
    coco = dict(
        info=dict(description=f'mmaddp demo digits ({split})'),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=categories)
    with open(osp.join(out_coco, 'annotations', f'instances_{split}2017.json'), 'w') as f:
        json.dump(coco, f, sort_keys=True)
    return dict(images=len(images), instances=len(annotations)), sources


def _build_part(job: tuple, tmp: str, seed: int, sizes: dict, pools: dict):
    """One part/split of the build (its own random stream): returns
    (job, counts, sources)."""
    kind, part_index, split_index, split = job
    scans, labels, photos = load_sources()
    rng = np.random.default_rng([seed, part_index, split_index])
    if kind == 'scenes':
        stats, sources = scenes(
            osp.join(tmp, 'coco'), osp.join(tmp, 'ade'), split, pools[split],
            sizes['coco'][split_index], scans, labels, photos, rng)
        return job, stats, sources
    n = sizes[kind][split_index]
    sources = single_digit_images(
        osp.join(tmp, kind, split), pools[split], n, scans, labels, photos, rng)
    return job, n, sources


def build_demo_data(out: str,
                    seed: int = 0,
                    sizes: Dict[str, Tuple[int, int]] = None,
                    overwrite: bool = False,
                    workers: int = None) -> dict:
    """Build all four parts under ``out``; returns the counts per part/split.

    Writes into ``out.tmp`` first and renames at the end, so an interrupted
    build never leaves a half-written ``out``. An existing ``out`` is kept
    unless ``overwrite``. The six part/split jobs draw from their own random
    streams, so they run in ``workers`` processes (default: one per core, at
    most 4) and give the same bytes as one process.
    """
    sizes = dict(SIZES, **(sizes or {}))
    if osp.exists(out) and not overwrite:
        raise FileExistsError(f'{out} already exists; pass overwrite=True (--overwrite) '
                              'to rebuild it')
    tmp = out.rstrip('/') + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    _, labels, _ = load_sources()
    train_pool, val_pool = split_digits(labels, seed)
    pools = dict(train=train_pool, val=val_pool)
    counts = dict(digits=dict(train=len(train_pool), val=len(val_pool)))
    manifest = dict(seed=seed, pools=dict(train=train_pool.tolist(), val=val_pool.tolist()))
    jobs = [(part, part_index, split_index, split)
            for part_index, part in enumerate(('pretrain', 'imagenet'))
            for split_index, split in enumerate(('train', 'val'))]
    jobs += [('scenes', 2, split_index, split)
             for split_index, split in enumerate(('train', 'val'))]
    # the largest jobs first, so the last one to finish is a small one (by
    # pixels written: a 128 px scene is 16 times a 32 px image)
    jobs.sort(key=lambda job: -sizes['coco' if job[0] == 'scenes' else job[0]][job[2]] *
              (16 if job[0] == 'scenes' else 1))
    build = partial(_build_part, tmp=tmp, seed=seed, sizes=sizes, pools=pools)
    workers = workers or min(4, os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
            results = list(pool.map(build, jobs))
    else:
        results = [build(job) for job in jobs]
    counts['coco'], counts['ade'] = {}, {}
    for (kind, _, _, split), count, sources in results:
        if kind == 'scenes':
            manifest[f'scenes/{split}'] = sources
            counts['coco'][split] = count
            counts['ade'][split] = count['images']
        else:
            manifest[f'{kind}/{split}'] = sources
            counts.setdefault(kind, {})[split] = count
    with open(osp.join(tmp, 'sources.json'), 'w') as f:
        json.dump(manifest, f, sort_keys=True)  # which digit scans each image uses
    with open(osp.join(tmp, 'counts.json'), 'w') as f:
        json.dump(counts, f, indent=2, sort_keys=True)
    if osp.exists(out):
        shutil.rmtree(out)
    os.replace(tmp, out)
    return counts
