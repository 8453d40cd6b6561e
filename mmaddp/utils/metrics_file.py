"""The metrics file ``tools/test.py`` and ``tools/train.py --test`` write."""
import json
import os
import os.path as osp
from typing import Dict


def save_test_metrics(work_dir: str, config: str, checkpoint: str, metrics: Dict) -> Dict:
    """Write ``WORK_DIR/test_metrics.json`` = ``{config, checkpoint,
    metrics}`` (numbers rounded to 4 places) through a temporary file, so a
    reader never sees half of it; return the rounded metrics."""
    metrics = {
        k: round(float(v), 4) if isinstance(v, (int, float)) else v
        for k, v in metrics.items()
    }
    out = osp.join(work_dir, 'test_metrics.json')
    with open(out + '.tmp', 'w') as f:
        json.dump(
            dict(config=config, checkpoint=checkpoint, metrics=metrics), f, indent=2, default=str)
    os.replace(out + '.tmp', out)
    return metrics
