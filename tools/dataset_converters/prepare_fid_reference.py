"""Write the FID reference images the way MAGE / ADDP compare against them.

    python tools/dataset_converters/prepare_fid_reference.py \\
        data/imagenet/val data/imagenet/val_fid_256 [--size 256]

Every PNG / JPEG under SRC_DIR (recursive; all 50,000 images of an
ImageNet-style ``val/CLASS/*.JPEG`` folder) is loaded as RGB, resized so that
its shorter side is SIZE and centre-cropped to SIZE x SIZE, then written as
``OUT_DIR/<same relative folder>/<file stem>.png``. These are the transforms of
MAGE's ``prepare_imgnet_val.py`` (``transforms.Resize(256)`` +
``transforms.CenterCrop(256)`` on the PIL image, i.e. torchvision's default
bilinear interpolation, which PIL antialiases when it shrinks); ADDP evaluates
with MAGE's protocol. Then::

    python tools/eval_fid.py SAMPLES_DIR data/imagenet/val_fid_256 --weights INCEPTION.pth

Each PNG is written to a temporary file and renamed, so an interrupted run
leaves only complete images, and running again continues where it stopped:
outputs that exist already (at the right size) are kept. OUT_DIR may hold
nothing else. An unreadable image stops the run with a line naming it, unless
``--skip-unreadable`` (then each one is reported and left out).
"""
import argparse
import os
import os.path as osp
import sys

from mmaddp.utils import exit_on_bad_input

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='ImageNet-style val folder -> FID reference PNGs')
    parser.add_argument('src_dir', help='folder of reference images (searched recursively)')
    parser.add_argument('out_dir', help='output folder (created; may hold only earlier outputs)')
    parser.add_argument(
        '--size', type=int, default=256, help='shorter side after resizing, and the crop size')
    parser.add_argument(
        '--skip-unreadable',
        action='store_true',
        help='report and leave out unreadable images instead of stopping')
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error('--size must be >= 1')
    return args


def list_sources(src_dir: str):
    """Relative paths of the PNG / JPEG files under ``src_dir`` (sorted)."""
    if not osp.isdir(src_dir):
        raise FileNotFoundError(f'Source folder not found: {src_dir}')
    found = []
    for root, dirs, names in os.walk(src_dir):
        dirs.sort()
        found += [
            osp.relpath(osp.join(root, n), src_dir) for n in names
            if n.lower().endswith(IMAGE_EXTENSIONS)
        ]
    if not found:
        raise ValueError(f'No PNG or JPEG images in {src_dir}')
    return sorted(found)


def output_names(sources):
    """``{source relative path: output relative path (stem + .png)}``;
    refuses two sources that would write the same output."""
    outputs = {}
    for rel in sources:
        out = osp.splitext(rel)[0] + '.png'
        if out in outputs:
            raise ValueError(f'{outputs[out]} and {rel} would both be written as {out}; '
                             'rename one of them')
        outputs[out] = rel
    return {rel: out for out, rel in outputs.items()}


def _is_temporary(name: str) -> bool:
    return name.startswith('.') and name.endswith('.tmp')  # write_png_atomic's


def check_out_dir(src_dir: str, out_dir: str, expected) -> list:
    """Refuse an ``out_dir`` inside ``src_dir`` (or the other way round) and
    one holding files other than the expected outputs; returns the temporary
    files a killed run left there (to remove)."""
    src, out = osp.realpath(src_dir), osp.realpath(out_dir)
    if out == src or out.startswith(src + os.sep) or src.startswith(out + os.sep):
        raise ValueError(f'OUT_DIR {out_dir} and SRC_DIR {src_dir} must not contain each other')
    if not osp.exists(out_dir):
        return []
    if not osp.isdir(out_dir):
        raise ValueError(f'OUT_DIR {out_dir} exists and is not a folder')
    expected, leftovers = set(expected), []
    for root, _, names in os.walk(out_dir):
        for name in names:
            rel = osp.relpath(osp.join(root, name), out_dir)
            if _is_temporary(name):
                leftovers.append(osp.join(root, name))
            elif rel not in expected:
                raise ValueError(f'OUT_DIR {out_dir} holds {rel}, which is not an output for '
                                 f'{src_dir}; use an empty or new folder')
    return leftovers


def reference_image(path: str, size: int):
    """The reference version of one image: RGB, shorter side resized to
    ``size`` (torchvision ``Resize``, bilinear), centre crop ``size`` x
    ``size``.

    Args:
        path (str): a PNG / JPEG file.
        size (int): the output side length.

    Returns:
        PIL.Image.Image: RGB image of ``size`` x ``size``.

    Raises:
        ValueError: the file cannot be decoded (corrupt or truncated).
    """
    from PIL import Image
    from torchvision import transforms
    try:
        with Image.open(path) as img:
            img = img.convert('RGB')  # also decodes the whole file
    except (OSError, SyntaxError, ValueError) as err:  # PIL's errors on bad bytes
        raise ValueError(f'image {path} cannot be read (corrupt or truncated?): {err}') from err
    transform = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size)])
    return transform(img)


def write_png_atomic(image, path: str) -> None:
    """Save ``image`` as PNG through a temporary file in the same folder and
    ``os.replace``, so ``path`` is either absent or complete."""
    folder = osp.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = osp.join(folder, f'.{osp.basename(path)}.{os.getpid()}.tmp')
    try:
        image.save(tmp, format='PNG')
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def existing_output_ok(path: str, size: int) -> bool:
    """Whether an earlier run's output at ``path`` can stay; refuses one of
    another size (an earlier run with another ``--size``)."""
    from PIL import Image
    if not osp.isfile(path):
        return False
    try:
        with Image.open(path) as img:
            found = img.size
    except (OSError, SyntaxError, ValueError):
        return False  # not a complete PNG: written again
    if found != (size, size):
        raise ValueError(f'{path} is {found[0]} x {found[1]}, not {size} x {size}: OUT_DIR holds '
                         'the output of a run with another --size; use a new folder')
    return True


def prepare_reference(src_dir: str,
                      out_dir: str,
                      size: int = 256,
                      skip_unreadable: bool = False,
                      log=print) -> dict:
    """Write the reference PNGs of every image under ``src_dir`` to ``out_dir``.

    Args:
        src_dir (str): folder of PNG / JPEG images (recursive).
        out_dir (str): output folder; created, may hold only outputs of an
            earlier run on ``src_dir`` with the same ``size`` (kept).
        size (int): shorter side after resizing and crop size. Default: 256.
        skip_unreadable (bool): report and leave out unreadable images instead
            of raising ``ValueError``. Default: False.
        log (callable): where the per-file reports go. Default: print.

    Returns:
        dict: ``written``, ``kept`` (already there), ``skipped`` (list of
        unreadable source paths) and ``total`` (PNG files in ``out_dir``).
    """
    from mmengine.utils import ProgressBar
    sources = list_sources(src_dir)
    names = output_names(sources)
    for leftover in check_out_dir(src_dir, out_dir, names.values()):
        os.remove(leftover)
    os.makedirs(out_dir, exist_ok=True)
    written, kept, skipped = 0, 0, []
    bar = ProgressBar(len(sources))
    for rel in sources:
        target = osp.join(out_dir, names[rel])
        if existing_output_ok(target, size):
            kept += 1
        else:
            try:
                image = reference_image(osp.join(src_dir, rel), size)
            except ValueError as err:
                if not skip_unreadable:
                    raise
                skipped.append(osp.join(src_dir, rel))
                log(f'\nskipped: {err}')
            else:
                write_png_atomic(image, target)
                written += 1
        bar.update()
    sys.stdout.write('\n')
    return dict(written=written, kept=kept, skipped=skipped, total=written + kept)


def main(argv=None):
    args = parse_args(argv)
    result = prepare_reference(args.src_dir, args.out_dir, args.size, args.skip_unreadable)
    print(f"{result['total']} reference images of {args.size} x {args.size} in {args.out_dir} "
          f"({result['written']} written, {result['kept']} kept from an earlier run, "
          f"{len(result['skipped'])} unreadable skipped)")
    return result


if __name__ == '__main__':
    exit_on_bad_input(main)
