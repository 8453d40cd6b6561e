"""Refuse an annotation file whose classes are not the config's.

mmdet's ``CocoDataset`` keeps only the annotation categories named in the
config's ``metainfo['classes']`` and drops the rest without a word, so a
misspelt or renamed class trains a detector that never sees it. MMEngine and
mmdet have no check for this; this hook makes it before the first iteration.
"""
from mmengine.hooks import Hook

from mmaddp.registry import register_hook

#: annotation files up to this size are read again for their category names
#: when nothing else says that the classes differ (COCO train2017: 450 MB)
MAX_REREAD_MB = 100


def _unwrap(dataset):
    while hasattr(dataset, 'dataset') and not hasattr(dataset, 'cat_ids'):
        dataset = dataset.dataset  # dataset wrappers
    return dataset


def annotation_classes(ann_file: str):
    """The category names of a COCO-style annotation file."""
    import json
    with open(ann_file) as f:
        return [cat['name'] for cat in json.load(f).get('categories', [])]


def check_dataset_classes(dataset, split: str) -> None:
    """Raise ``ValueError`` naming the annotation file and the differing
    classes when a COCO-style dataset's categories differ from its
    ``metainfo['classes']``.

    mmdet's ``CocoDataset`` frees its COCO index after loading, keeping the
    ids of the config's classes found in the file (``cat_ids``): fewer ids
    than classes means some are missing. The file's own names are read again
    to say which (and, for files under :data:`MAX_REREAD_MB`, to find
    categories that the config lacks). Other datasets pass unchecked.
    """
    import os.path as osp
    dataset = _unwrap(dataset)
    cat_ids = getattr(dataset, 'cat_ids', None)
    ann = getattr(dataset, 'ann_file', None)
    wanted = list(getattr(dataset, 'metainfo', {}).get('classes', ()) or ())
    if cat_ids is None or not ann or not wanted or not osp.isfile(ann):
        return
    if len(cat_ids) == len(wanted) and osp.getsize(ann) > MAX_REREAD_MB * 2**20:
        return
    found = annotation_classes(ann)
    if set(found) == set(wanted):
        return
    raise ValueError(f'{split} annotation file {ann} has other classes than the config: not in '
                     f'the config {sorted(set(found) - set(wanted))}, not in the file '
                     f'{sorted(set(wanted) - set(found))}')


@register_hook()
class DatasetClassesHook(Hook):
    """Before training, check the train (and val) datasets' annotation
    classes against the config's (:func:`check_dataset_classes`)."""

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        check_dataset_classes(runner.train_dataloader.dataset, 'train')
        val_loop = getattr(runner, '_val_loop', None)
        if val_loop is not None and hasattr(val_loop, 'dataloader'):
            check_dataset_classes(val_loop.dataloader.dataset, 'val')
