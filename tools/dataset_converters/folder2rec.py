"""Pack ``<root>/<identity>/<image>`` folders into an InsightFace-layout RecordIO set.

    python tools/dataset_converters/folder2rec.py --root data/my_faces --output data/my_faces_rec
    python tools/dataset_converters/folder2rec.py --root data/raw --output data/raw_rec --image-size 112 --reencode

Writes ``train.rec``, ``train.idx`` (header record 0, images, identity records), ``property``
("num_classes,H,W") and ``classes.txt`` (identity folder name per label). Labels are the
sorted folder names' positions, as ``ImageFolderDataset`` gives them. JPEG files already of
the target size are stored byte for byte; other images are resized (if needed) and encoded
as JPEG. Unreadable images are skipped with a warning naming them (``--strict`` stops
instead). The record files are written under temporary names and renamed at the end.
"""
import argparse
import os
import os.path as osp
import sys
import time
import warnings

from facekit.utils import cli

JPEG_MAGIC = b'\xff\xd8\xff'


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', required=True, help='folder of identity folders')
    p.add_argument('--output', required=True, help='output folder for train.rec/train.idx/property')
    p.add_argument('--image-size', type=int, default=112, help='side of the stored square images')
    p.add_argument('--reencode', action='store_true', help='decode and re-encode even matching JPEGs')
    p.add_argument('--quality', type=int, default=95, help='JPEG quality when encoding')
    p.add_argument('--strict', action='store_true', help='stop at the first unreadable image')
    p.add_argument('--no-progress', action='store_true',
                   help='no progress bar (there is none anyway when stderr is not a terminal or CI=true)')
    return p.parse_args(argv)


def convert(root, output, image_size=112, reencode=False, quality=95, strict=False, progress=True):
    """Pack the folder; returns a summary dict."""
    import cv2
    import numpy as np
    from facekit.datasets import ImageFolderDataset
    from facekit.datasets.mx_face import write_mx_face_dataset
    from facekit.datasets.preprocess import decode_image
    from facekit.utils.progress import progress_bar

    folder = ImageFolderDataset(root, on_error='raise')
    # classes.txt holds one folder name per line: a name with a line break would shift every later label
    bad = [n for n in folder.classes if any(c in n for c in '\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029')]
    if bad:
        raise ValueError(f'{root}: identity folder {bad[0]!r} has a line break in its name ({len(bad)} such '
                         'folders); classes.txt lists one name per line: rename them (nothing was written)')
    stats = dict(kept=0, encoded=0, skipped=[])
    names = []  # folder names of the labels actually written (empty identities drop out)

    def samples():
        last_old = None
        for i, (path, old_label) in enumerate(progress_bar(folder.samples, desc='folder2rec', unit='img',
                                                           enabled=progress)):
            data = np.fromfile(path, dtype=np.uint8)
            try:
                rgb = decode_image(data, source=path, index=i)
            except ValueError as e:
                if strict:
                    raise ValueError(f'cannot read image {path}: {e}') from e
                warnings.warn(f'folder2rec: skipping unreadable image {path}', RuntimeWarning)
                stats['skipped'].append(path)
                continue
            raw = data.tobytes()
            if not reencode and raw.startswith(JPEG_MAGIC) and rgb.shape[:2] == (image_size, image_size):
                buf = raw
                stats['kept'] += 1
            else:
                if rgb.shape[:2] != (image_size, image_size):
                    rgb = cv2.resize(rgb, (image_size, image_size), interpolation=cv2.INTER_AREA)
                bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # imencode takes BGR
                buf = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
                stats['encoded'] += 1
            if old_label != last_old:
                names.append(folder.classes[old_label])
                last_old = old_label
            yield len(names) - 1, buf

    t0 = time.perf_counter()
    num_images, num_classes = write_mx_face_dataset(output, samples(), image_size=(image_size, image_size))
    tmp = osp.join(output, 'classes.txt.partial')
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(''.join(n + '\n' for n in names))
    os.replace(tmp, osp.join(output, 'classes.txt'))
    return dict(images=num_images, classes=num_classes, kept_bytes=stats['kept'], encoded=stats['encoded'],
                skipped=stats['skipped'], empty_identities=folder.num_classes - num_classes,
                seconds=time.perf_counter() - t0, output=output)


def main(argv=None):
    args = parse_args(argv)
    s = convert(args.root, args.output, args.image_size, args.reencode, args.quality, args.strict,
                not args.no_progress)
    print(f"wrote {s['images']} images of {s['classes']} identities to {s['output']} in {s['seconds']:.1f} s "
          f"({s['kept_bytes']} JPEGs kept byte for byte, {s['encoded']} encoded, {len(s['skipped'])} unreadable "
          f"skipped, {s['empty_identities']} identities without a readable image dropped)")
    for p in s['skipped']:
        print(f'  skipped: {p}')
    return 0


if __name__ == '__main__':
    sys.exit(cli.run_tool(main))
