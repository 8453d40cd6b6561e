"""Data transforms mmaddp adds to mmpretrain's pipeline."""
from typing import Optional

from mmcv.transforms import LoadImageFromFile

from mmaddp.registry import TRANSFORMS


@TRANSFORMS.register_module()
class CachedLoadImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` that decodes each file once per process and then
    hands out copies of the decoded array.

    For small images read many times by one process (the demo's 32 px digits,
    ~17 passes over 30,000 files): reading and decoding a file costs ~170 us,
    more than the rest of the per-sample pipeline, and with loader workers the
    batches also pay for the trip between processes. mmengine's file backends
    cache bytes at best, not decoded images, hence this class.

    The cache lives in the process that runs the pipeline (each loader worker
    has its own; with ``num_workers=0`` the training process). Once it holds
    ``max_cache_mb`` of pixels, further files are decoded every time they are
    read. A file that fails to load is never cached: it fails (or is skipped
    with ``ignore_empty``) each time, as with ``LoadImageFromFile``.

    Args:
        max_cache_mb (float): the most decoded pixels to keep, in MiB.
        **kwargs: ``LoadImageFromFile``'s arguments.
    """

    def __init__(self, max_cache_mb: float = 1024., **kwargs):
        super().__init__(**kwargs)
        self.max_cache_bytes = int(max_cache_mb * 2**20)
        self.cached_bytes = 0
        self.cache = {}

    def transform(self, results: dict) -> Optional[dict]:
        img = self.cache.get(results['img_path'])
        if img is None:
            results = super().transform(results)
            if results is None:  # ignore_empty and the file did not load
                return None
            img = results['img']
            if self.cached_bytes + img.nbytes <= self.max_cache_bytes:
                self.cache[results['img_path']] = img.copy()
                self.cached_bytes += img.nbytes
            return results
        # a copy: later transforms may change the array in place
        img = img.copy()
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f', max_cache_mb={self.max_cache_bytes / 2**20:g})'
