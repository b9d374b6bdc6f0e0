"""Unpack an InsightFace/im2rec RecordIO set into ``<output>/<label>/<n>.jpg`` folders.

    python tools/dataset_converters/rec2jpg.py --rec data/casia_webface --output data/casia_jpg
    python tools/dataset_converters/rec2jpg.py --rec data/ms1mv2 --output data/ms1mv2_jpg --reencode --quality 95

Folder and file names are zero-padded numbers (``00042/0003.jpg``) so their sorted order is
the label order and ``ImageFolderDataset`` / ``folder2rec.py`` give back the same labels.
By default the stored JPEG bytes are written unchanged (no quality loss); ``--reencode``
decodes and encodes again (also what happens to non-JPEG records, e.g. PNG). Everything is
written under ``<output>.partial`` and renamed to ``<output>`` only at the end, so an
interrupted run never leaves a folder that looks complete.
"""
import argparse
import os
import os.path as osp
import shutil
import sys
import time

from facekit.utils import cli

JPEG_MAGIC = b'\xff\xd8\xff'


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--rec', required=True, help='folder with train.rec / train.idx (and property)')
    p.add_argument('--rec-name', default='train', help='file stem of the .rec/.idx pair')
    p.add_argument('--output', required=True, help='output folder (must not exist)')
    p.add_argument('--reencode', action='store_true', help='decode and re-encode every image as JPEG')
    p.add_argument('--quality', type=int, default=95, help='JPEG quality when encoding')
    p.add_argument('--no-progress', action='store_true',
                   help='no progress bar (there is none anyway when stderr is not a terminal or CI=true)')
    return p.parse_args(argv)


def _read_record(ds, i):
    """(encoded bytes, label) of sample ``i``; ValueError naming the record, its byte offset and the
    file when the label is not a usable identity (NaN, inf, negative, not below num_classes)."""
    key = int(ds.keys[i])
    where = f'{ds.reader.path}: record {key} (sample {i}, byte offset {ds.reader.offset(key)})'
    try:
        buf, label = ds.get_encoded(i)
    except (ValueError, OverflowError) as e:  # int(nan) / int(inf) of the header label
        raise ValueError(f'{where} has an unusable label: {e}; the record set is corrupt') from e
    if not 0 <= label < ds.num_classes:
        raise ValueError(f'{where} has label {label}, outside [0, {ds.num_classes}); the record set is corrupt')
    return buf, label


def convert(rec_dir, output, rec_name='train', reencode=False, quality=95, progress=True):
    """Write every image of the record set; returns a summary dict."""
    import cv2
    from facekit.datasets import MXFaceDataset
    from facekit.utils.progress import progress_bar

    if osp.exists(output):
        raise FileExistsError(f'{output} exists; choose a new --output (nothing was written)')
    ds = MXFaceDataset(rec_dir, rec_name=rec_name)
    partial = output.rstrip('/\\') + '.partial'
    if osp.exists(partial):
        shutil.rmtree(partial)  # left by an interrupted run; never looked complete
    os.makedirs(partial)
    cwidth = max(5, len(str(ds.num_classes - 1)))
    counts = {}
    kept = reencoded = total_bytes = 0
    t0 = time.perf_counter()
    for i in progress_bar(range(len(ds)), desc='rec2jpg', unit='img', enabled=progress):
        buf, label = _read_record(ds, i)
        if reencode or not buf.startswith(JPEG_MAGIC):
            img = ds.get_image(i)
            ok, enc = cv2.imencode('.jpg', cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise ValueError(f'{rec_dir}: image {i} could not be encoded as JPEG')
            buf = enc.tobytes()
            reencoded += 1
        else:
            kept += 1
        n = counts.get(label, 0)
        counts[label] = n + 1
        folder = osp.join(partial, f'{label:0{cwidth}d}')
        if n == 0:
            os.makedirs(folder, exist_ok=True)
        with open(osp.join(folder, f'{n:04d}.jpg'), 'wb') as f:
            f.write(buf)
        total_bytes += len(buf)
    os.replace(partial, output)
    return dict(images=len(ds), classes=len(counts), kept_bytes=kept, reencoded=reencoded,
                megabytes=total_bytes / 2 ** 20, seconds=time.perf_counter() - t0, output=output)


def main(argv=None):
    args = parse_args(argv)
    s = convert(args.rec, args.output, args.rec_name, args.reencode, args.quality, not args.no_progress)
    print(f"wrote {s['images']} images of {s['classes']} identities to {s['output']} "
          f"({s['megabytes']:.1f} MiB; {s['kept_bytes']} stored bytes kept, {s['reencoded']} re-encoded) "
          f"in {s['seconds']:.1f} s")
    return 0


if __name__ == '__main__':
    sys.exit(cli.run_tool(main))
