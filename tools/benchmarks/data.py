"""Data-loading benchmark: images/sec through facekit's training loader.

    python tools/benchmark.py data                          # generated 112x112 JPEG .rec, 1 and 2 workers
    python tools/benchmark.py data --data-root data/casia_webface --workers 1 2 4
    python tools/benchmark.py data --mindrecord             # also the native MindRecord pipeline

Without ``--data-root`` a temporary InsightFace-layout .rec of SyntheticIdentities images
(JPEG quality 95) is written first. Each configuration runs ``--epochs`` passes over
``--num-images`` images; the first pass (worker start-up, page cache) is reported apart
from the steady passes. Rows print as a Markdown table for docs/benchmarks.md.
"""
import argparse
import json
import os
import os.path as osp
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv):
    p = argparse.ArgumentParser(prog='python tools/benchmark.py data', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-root', help='folder with train.rec/train.idx (default: generate one)')
    p.add_argument('--num-images', type=int, default=4096, help='images per pass (generated set size)')
    p.add_argument('--num-classes', type=int, default=128, help='identities in the generated set')
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--workers', type=int, nargs='+', default=[1, 2], help='num_workers values to run')
    p.add_argument('--modes', nargs='+', default=['threads', 'processes'], choices=['threads', 'processes'],
                   help='python worker kind for num_workers > 1')
    p.add_argument('--epochs', type=int, default=3, help='passes per configuration (first = warm-up)')
    p.add_argument('--mindrecord', action='store_true', help='also time MindDataset over a .mindrecord copy')
    p.add_argument('--python-transforms', action='store_true',
                   help='also time the .rec pipeline with every transform in Python (native_transforms=False)')
    p.add_argument('--json', help='write the results here as JSON')
    return p.parse_args(argv)


def make_rec(out_dir, num_images, num_classes):
    from facekit.datasets import SyntheticIdentities
    from facekit.datasets.mx_face import write_mx_face_dataset
    import cv2
    per = -(-num_images // num_classes)
    ds = SyntheticIdentities(num_classes, per, seed=0)

    def samples():
        from facekit.utils.progress import progress_bar
        for i in progress_bar(range(num_images), desc='generating records', unit='img', leave=False):
            ok, buf = cv2.imencode('.jpg', cv2.cvtColor(ds.get_image(i), cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, 95])
            yield ds.get_label(i), buf.tobytes()
    write_mx_face_dataset(out_dir, samples())


def time_loader(loader, epochs):
    """(first-pass images/s, steady images/s, images per pass)."""
    from facekit.utils.progress import progress_bar
    rates = []
    n = 0
    for epoch in range(epochs):
        n = 0
        t = time.perf_counter()
        for img, label in progress_bar(loader, total=len(loader), desc=f'pass {epoch + 1}/{epochs}', unit='batch',
                                       leave=False):
            n += len(label)
        rates.append(n / (time.perf_counter() - t))
    steady = float(np.mean(rates[1:])) if len(rates) > 1 else rates[0]
    return rates[0], steady, n


PIPELINE = [dict(type='RandomHorizontalFlip'), dict(type='Normalize'), dict(type='ToCHW')]


def run_generator(dataset_cfg, args, workers, mode, native=True):
    from facekit.datasets import build_dataloader
    cfg = dict(batch_size=args.batch_size, num_workers=workers, shuffle=True, drop_remainder=True, seed=0,
               python_multiprocessing=(mode == 'processes'), native_transforms=native, dataset=dataset_cfg)
    loader = build_dataloader(cfg)
    try:
        return time_loader(loader, args.epochs)
    finally:
        loader.close()


def run_mindrecord(data_root, args, workers, tmp):
    from facekit.datasets import build_dataloader
    from facekit.datasets.mindrecord import rec_to_mindrecord
    path = osp.join(tmp, 'mr', 'train.mindrecord')
    if not osp.exists(path):
        rec_to_mindrecord(data_root, path)
    cfg = dict(batch_size=args.batch_size, num_workers=workers, shuffle=True, drop_remainder=True, seed=0,
               dataset=dict(type='MindRecordFaceDataset', path=path,
                            pipeline=[dict(type='RandomHorizontalFlip'), dict(type='Normalize'),
                                      dict(type='ToCHW')]))
    loader = build_dataloader(cfg)
    try:
        return time_loader(loader, args.epochs)
    finally:
        loader.close()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import cv2
    tmp = tempfile.mkdtemp(prefix='facekit-bench-data-')
    results = []
    try:
        data_root = args.data_root
        if data_root is None:
            data_root = osp.join(tmp, 'rec')
            t = time.perf_counter()
            make_rec(data_root, args.num_images, args.num_classes)
            print(f'generated {args.num_images} JPEG records in {time.perf_counter() - t:.1f} s: {data_root}')
        from facekit.datasets import MXFaceDataset
        ds = MXFaceDataset(data_root)
        # Reference points: one thread reading + decoding, no MindSpore.
        n_ref = min(len(ds), 1000)
        t = time.perf_counter()
        for i in range(n_ref):
            ds[i]
        results.append(dict(pipeline='read+decode only (1 thread, no MindSpore)', workers=1, mode='-',
                            first=n_ref / (time.perf_counter() - t), steady=None, images=n_ref))
        cases = [(w, 'threads' if w == 1 else m) for w in args.workers for m in args.modes]
        rec_cfg = dict(type='MXFaceDataset', data_root=data_root, pipeline=PIPELINE)
        syn_cfg = dict(type='SyntheticIdentities', num_classes=args.num_classes,
                       images_per_class=-(-args.num_images // args.num_classes), pipeline=PIPELINE)
        runs = [('GeneratorDataset + MXFaceDataset (.rec JPEG)', rec_cfg, True)]
        if args.python_transforms:
            runs.append(('GeneratorDataset + MXFaceDataset (.rec JPEG), all-Python transforms', rec_cfg, False))
        runs.append(('GeneratorDataset + SyntheticIdentities (rendered)', syn_cfg, True))
        for label, dcfg, native in runs:
            for w, mode in dict.fromkeys(cases):
                first, steady, n = run_generator(dcfg, args, w, mode, native)
                results.append(dict(pipeline=label, workers=w, mode=mode, first=first, steady=steady, images=n))
                print(f'{label} workers={w} {mode}: first pass {first:.0f} img/s, steady {steady:.0f} img/s')
        if args.mindrecord:
            for w in args.workers:
                first, steady, n = run_mindrecord(data_root, args, w, tmp)
                results.append(dict(pipeline='MindDataset (.mindrecord, C++ decode)', workers=w, mode='native',
                                    first=first, steady=steady, images=n))
                print(f'MindDataset workers={w}: first pass {first:.0f} img/s, steady {steady:.0f} img/s')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f'\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, OpenCV {cv2.__version__}, '
          f'batch {args.batch_size}, {args.epochs} passes\n')
    print('| pipeline | workers | kind | first pass img/s | steady img/s |')
    print('|---|---|---|---|---|')
    for r in results:
        steady = '-' if r['steady'] is None else f"{r['steady']:.0f}"
        print(f"| {r['pipeline']} | {r['workers']} | {r['mode']} | {r['first']:.0f} | {steady} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
