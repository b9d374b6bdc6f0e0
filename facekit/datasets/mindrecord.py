"""MindRecord copies of face sets: MindSpore's native format, read and decoded in C++.

Measured on the 2-core development machine (tools/benchmark.py data --mindrecord,
docs/benchmarks.md): reading + JPEG decoding + flip/normalize in MindSpore's C++ pipeline
runs faster than the Python GeneratorDataset over the .rec, and does not hold the GIL
while the training step runs. ``tools/dataset_converters/rec2mindrecord.py`` writes one.

A file ``<name>.mindrecord`` (+ ``<name>.mindrecord.db`` index, made by MindSpore) holds rows
``{'image': encoded bytes, 'label': int32}``; ``<name>.mindrecord.json`` holds
``{"num_images", "num_classes", "image_size"}``. MindSpore's index stores the file name, so
the files are written in a temporary folder under their final names and moved at the end
(the .mindrecord last: its presence marks a complete copy).
"""
import json
import os
import os.path as osp
import shutil
import tempfile

from ..registry import DATASETS
from .base import BaseFaceDataset

__all__ = ['write_mindrecord', 'rec_to_mindrecord', 'MindRecordFaceDataset']

_SCHEMA = {'image': {'type': 'bytes'}, 'label': {'type': 'int32'}}


def write_mindrecord(path, samples, image_size=(112, 112), rows_per_write=1000):
    """Write ``(label, encoded image bytes)`` samples to ``path`` (``*.mindrecord``).

    Returns:
        (num_images, num_classes) with num_classes = max label + 1.
    """
    from mindspore.mindrecord import FileWriter

    path = osp.abspath(os.fspath(path))
    if not path.endswith('.mindrecord'):
        raise ValueError(f'write_mindrecord: the path must end with .mindrecord, got {path}')
    out_dir = osp.dirname(path)
    os.makedirs(out_dir, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix='.partial-', dir=out_dir)
    name = osp.basename(path)
    try:
        writer = FileWriter(osp.join(tmpdir, name), shard_num=1, overwrite=True)
        writer.add_schema(_SCHEMA, 'facekit_face')
        rows, count, max_label = [], 0, -1
        for label, encoded in samples:
            rows.append({'image': bytes(encoded), 'label': int(label)})
            count += 1
            max_label = max(max_label, int(label))
            if len(rows) >= rows_per_write:
                writer.write_raw_data(rows)
                rows = []
        if rows:
            writer.write_raw_data(rows)
        if count == 0:
            raise ValueError(f'write_mindrecord({path}): no samples')
        writer.commit()
        meta = dict(num_images=count, num_classes=max_label + 1, image_size=list(image_size))
        with open(osp.join(tmpdir, name + '.json'), 'w') as f:
            json.dump(meta, f)
        for suffix in ('.db', '.json', ''):
            os.replace(osp.join(tmpdir, name + suffix), path + suffix)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return count, max_label + 1


def rec_to_mindrecord(rec_dir, path, rec_name='train', progress=False):
    """Copy a RecordIO set (InsightFace or im2rec) to MindRecord, image bytes unchanged."""
    from ..utils.progress import progress_bar
    from .mx_face import MXFaceDataset

    ds = MXFaceDataset(rec_dir, rec_name=rec_name)
    size = tuple(ds.property[1:]) if ds.property else (112, 112)

    def samples():
        for i in progress_bar(range(len(ds)), desc='rec2mindrecord', unit='img', enabled=progress):
            buf, label = ds.get_encoded(i)
            yield label, buf
    return write_mindrecord(path, samples(), image_size=size)


@DATASETS.register_module()
class MindRecordFaceDataset(BaseFaceDataset):
    """A MindRecord face set, read by MindSpore's native pipeline (training loader only).

    ``build_dataloader`` asks it for a native pipeline (``build_native``): the JPEG decode and
    every transform with a native equivalent (flip, normalize, HWC->CHW, resize) run in C++;
    other transforms run as Python functions inside the same map. MindRecord files have no
    random access from Python, so ``get_image``/``get_label`` (and ``ds[i]``) are not
    available: use the ``.rec`` it was made from for verification pairs or inspection.

    Args:
        path: the ``*.mindrecord`` file.
        pipeline: TRANSFORMS configs (as for the other datasets; decoding is implicit).
    """

    def __init__(self, path, pipeline=None):
        self.path = os.fspath(path)
        for p in (self.path, self.path + '.db'):
            if not osp.isfile(p):
                raise FileNotFoundError(f'MindRecordFaceDataset: {p} does not exist '
                                        f'(write one with tools/dataset_converters/rec2mindrecord.py)')
        meta_path = self.path + '.json'
        if not osp.isfile(meta_path):
            raise FileNotFoundError(f'MindRecordFaceDataset: {meta_path} (num_images, num_classes) is missing')
        with open(meta_path) as f:
            meta = json.load(f)
        self.num_images = int(meta['num_images'])
        self.num_classes = int(meta['num_classes'])
        super().__init__(pipeline)

    def __len__(self):
        return self.num_images

    def get_image(self, idx):
        raise NotImplementedError(f'MindRecordFaceDataset({self.path}) is read only by the MindSpore native '
                                  f'pipeline (build_dataloader); read sample {idx} from the .rec it was made from')

    def get_label(self, idx):
        raise NotImplementedError(f'MindRecordFaceDataset({self.path}) is read only by the MindSpore native '
                                  f'pipeline (build_dataloader); read label {idx} from the .rec it was made from')

    def indices_by_class(self):
        raise NotImplementedError(f'MindRecordFaceDataset({self.path}) has no per-class index; use the .rec '
                                  f'it was made from (MXFaceDataset)')

    def build_native(self, shuffle, seed, rank, world_size, num_workers):
        """Unbatched ``mindspore.dataset`` pipeline of (CHW float32 img, int32 label) rows.

        Each rank reads ``len // world_size`` samples so every rank runs the same number of
        steps; shuffling uses MindSpore's global dataset seed, set here to ``seed``.
        """
        import mindspore.dataset as msds
        import mindspore.dataset.transforms as mst
        import mindspore.dataset.vision as msv
        import mindspore as ms

        if shuffle:
            msds.config.set_seed(int(seed))
        kwargs = dict(columns_list=['image', 'label'], num_parallel_workers=num_workers, shuffle=bool(shuffle))
        if world_size > 1:
            kwargs.update(num_shards=world_size, shard_id=rank, num_samples=self.num_images // world_size)
        data = msds.MindDataset(self.path, **kwargs)
        ops = [msv.Decode()]
        for t in self.pipeline.transforms:
            if type(t).__name__ == 'DecodeImage':
                continue  # decoding is the first op already
            native = t.native() if hasattr(t, 'native') else None  # a plain callable has no C++ twin
            ops.append(native if native is not None else t)
        data = data.map(operations=ops, input_columns=['image'], output_columns=['img'],
                        num_parallel_workers=num_workers)
        data = data.map(operations=mst.TypeCast(ms.int32), input_columns=['label'])
        return data.project(['img', 'label'])

    def __repr__(self):
        return (f'MindRecordFaceDataset(path={self.path!r}, num_images={self.num_images}, '
                f'num_classes={self.num_classes})')
