"""The IJB-B / IJB-C 1:1 release in the layout insightface's IJB scripts read, with its faces aligned.

Layout (one folder per set; ``IJBB`` with ``ijbb_*`` files alike)::

    <root>/IJBC/loose_crop/1.jpg ... 469375.jpg
    <root>/IJBC/meta/ijbc_face_tid_mid.txt           image template_id media_id
    <root>/IJBC/meta/ijbc_name_5pts_score.txt        image x1 y1 x2 y2 x3 y3 x4 y4 x5 y5 detector_score
    <root>/IJBC/meta/ijbc_template_pair_label.txt    template_id1 template_id2 label

for example ``1.jpg 1 69544``, ``1.jpg 46.060 62.026 87.785 60.323 68.851 77.656 52.162 99.875
86.450 98.648 0.999`` and ``1 11065 1``. Columns are separated by spaces; blank lines are skipped.

- Row i of ``*_face_tid_mid.txt`` and row i of ``*_name_5pts_score.txt`` describe the same image
  (the reference scripts pair them by row; here the image names are checked to agree).
- The landmarks are pixel (x, y) in the loose crop, in the order left eye, right eye, nose tip,
  left and right mouth corner (the ArcFace template's order); the last column is the face
  detector's confidence, which the reference multiplies into the image feature.
- A label is 1 for a genuine pair (same subject), 0 for an impostor pair.

Reading is checked line by line: a malformed line raises ``IJBFormatError`` naming the file and the
line number. The pair file of IJB-C has 15.7 million lines, so it is parsed by NumPy first and
only scanned line by line in Python when that fails (to name the bad line).
"""
import os.path as osp

import numpy as np

from .alignment import align_face
from .preprocess import IMAGE_SIZE, decode_image

__all__ = ['IJB_SETS', 'IJBFormatError', 'IJBRelease', 'ijb_set_name', 'ijb_files', 'find_ijb_release',
           'read_face_tid_mid', 'read_name_5pts_score', 'read_template_pair_label']

IJB_SETS = ('IJBB', 'IJBC')


class IJBFormatError(ValueError):
    """A meta file of an IJB release does not have the official format (the message names file:line)."""


def ijb_set_name(name):
    """``'IJBB'`` or ``'IJBC'`` for a set name in any case (``'ijbc'``, ``'IJBC'``); ValueError otherwise."""
    upper = str(name).upper()
    if upper not in IJB_SETS:
        raise ValueError(f'unknown IJB set {name!r}; expected one of {list(IJB_SETS)} (any case)')
    return upper


def ijb_files(folder, set_name):
    """Paths of one set's files under its folder (``<root>/IJBC``): the three meta files and ``loose_crop``."""
    set_name = ijb_set_name(set_name)
    meta = osp.join(folder, 'meta')
    low = set_name.lower()
    return dict(face_tid_mid=osp.join(meta, f'{low}_face_tid_mid.txt'),
                name_5pts_score=osp.join(meta, f'{low}_name_5pts_score.txt'),
                template_pair_label=osp.join(meta, f'{low}_template_pair_label.txt'),
                loose_crop=osp.join(folder, 'loose_crop'))


def find_ijb_release(root, set_name):
    """The set's folder under ``root``: ``<root>/IJBC`` (insightface's layout) or ``root`` itself when it
    is that folder (arcface_torch's ``--image-path``).

    Returns ``(folder or None, [face_tid_mid paths looked for])``; a folder counts when its
    ``meta/<set>_face_tid_mid.txt`` exists.
    """
    set_name = ijb_set_name(set_name)
    root = osp.abspath(osp.expanduser(str(root)))
    searched = []
    for folder in (osp.join(root, set_name), root):
        marker = ijb_files(folder, set_name)['face_tid_mid']
        searched.append(marker)
        if osp.isfile(marker):
            return folder, searched
    return None, searched


def _fields(path, ncols, layout):
    """``(line number, fields)`` of each non-blank line of ``path``; every line must have ``ncols`` fields."""
    with open(path, encoding='utf-8') as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != ncols:
                raise IJBFormatError(f'{path}:{lineno}: expected {ncols} space-separated columns ({layout}), '
                                     f'got {len(fields)}: {line.strip()[:160]!r}')
            yield lineno, fields


def _require_file(path, what):
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}')


def _require_rows(count, path, what):
    if count == 0:
        raise IJBFormatError(f'{path}: no {what} lines (the file is empty)')


FACE_TID_MID = 'image template_id media_id'
NAME_5PTS_SCORE = 'image x1 y1 x2 y2 x3 y3 x4 y4 x5 y5 detector_score'
TEMPLATE_PAIR_LABEL = 'template_id1 template_id2 label'


def read_face_tid_mid(path):
    """``*_face_tid_mid.txt`` -> ``(names, templates, medias, line_numbers)``.

    Returns: names (list of str), templates and medias ((N,) int64), line_numbers ((N,) int64, 1-based).
    """
    _require_file(path, 'IJB face list (image template_id media_id)')
    names, ids, lines = [], [], []
    for lineno, fields in _fields(path, 3, FACE_TID_MID):
        try:
            ids.append((int(fields[1]), int(fields[2])))
        except ValueError:
            raise IJBFormatError(f'{path}:{lineno}: template_id and media_id must be integers ({FACE_TID_MID}), '
                                 f'got {fields[1]!r} {fields[2]!r}') from None
        names.append(fields[0])
        lines.append(lineno)
    _require_rows(len(names), path, FACE_TID_MID)
    ids = np.asarray(ids, dtype=np.int64)
    return names, ids[:, 0].copy(), ids[:, 1].copy(), np.asarray(lines, dtype=np.int64)


def read_name_5pts_score(path):
    """``*_name_5pts_score.txt`` -> ``(names, landmarks, scores, line_numbers)``.

    Returns: names (list of str), landmarks ((N, 5, 2) float32 pixel x, y in the loose crop),
    scores ((N,) float32 detector confidence), line_numbers ((N,) int64).
    """
    _require_file(path, 'IJB landmark list (image, 5 points, detector score)')
    names, values, lines = [], [], []
    for lineno, fields in _fields(path, 12, NAME_5PTS_SCORE):
        try:
            row = [float(v) for v in fields[1:]]
        except ValueError:
            raise IJBFormatError(f'{path}:{lineno}: the 10 landmark coordinates and the score must be numbers '
                                 f'({NAME_5PTS_SCORE}), got {" ".join(fields[1:])!r}') from None
        if not all(np.isfinite(row)):
            raise IJBFormatError(f'{path}:{lineno}: landmarks and score must be finite, got {" ".join(fields[1:])!r}')
        names.append(fields[0])
        values.append(row)
        lines.append(lineno)
    _require_rows(len(names), path, NAME_5PTS_SCORE)
    values = np.asarray(values, dtype=np.float64)
    landmarks = values[:, :10].reshape(-1, 5, 2).astype(np.float32)
    return names, landmarks, values[:, 10].astype(np.float32), np.asarray(lines, dtype=np.int64)


def _pairs_line_by_line(path):
    rows = []
    for lineno, fields in _fields(path, 3, TEMPLATE_PAIR_LABEL):
        try:
            t1, t2, label = (int(v) for v in fields)
        except ValueError:
            raise IJBFormatError(f'{path}:{lineno}: template ids and label must be integers ({TEMPLATE_PAIR_LABEL}), '
                                 f'got {" ".join(fields)!r}') from None
        if label not in (0, 1):
            raise IJBFormatError(f'{path}:{lineno}: label must be 1 (genuine) or 0 (impostor), got {label}')
        rows.append((t1, t2, label))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def read_template_pair_label(path):
    """``*_template_pair_label.txt`` -> ``(t1, t2, labels)``: (P,) int64, (P,) int64, (P,) bool."""
    _require_file(path, 'IJB template pair list (template_id1 template_id2 label)')
    rows = None
    if osp.getsize(path) > 0:
        try:
            rows = np.loadtxt(path, dtype=np.int64, ndmin=2, comments=None)
        except ValueError:  # a malformed line: the scan below names it
            rows = None
    if rows is None or rows.ndim != 2 or rows.shape[1] != 3 or not np.isin(rows[:, 2], (0, 1)).all():
        rows = _pairs_line_by_line(path)
    _require_rows(rows.shape[0], path, TEMPLATE_PAIR_LABEL)
    return rows[:, 0].copy(), rows[:, 1].copy(), rows[:, 2] == 1


def _line_of_row(path, row):
    """1-based line number of the ``row``-th (0-based) non-blank line of ``path``."""
    seen = -1
    with open(path, encoding='utf-8') as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                seen += 1
                if seen == row:
                    return lineno
    return None


class IJBRelease:
    """One IJB set read from the official release: meta files read and cross-checked on construction,
    faces read and aligned one at a time (a 470k-image release is never held in memory).

    Args:
        root: folder holding ``IJBC/`` (or ``IJBB/``), or that set folder itself.
        set_name: ``'IJBC'`` or ``'IJBB'`` (any case).
        image_size: side of the aligned crops (112 for every facekit model).

    Attributes (one row per image, in the meta files' order): ``names``, ``templates``, ``medias``
    ((N,) int64), ``landmarks`` ((N, 5, 2) float32), ``detector_scores`` ((N,) float32); per pair:
    ``pair_t1``, ``pair_t2`` ((P,) int64), ``pair_labels`` ((P,) bool); ``folder``, ``files``.
    """

    def __init__(self, root, set_name='IJBC', image_size=IMAGE_SIZE):
        self.set_name = ijb_set_name(set_name)
        self.image_size = int(image_size)
        folder, searched = find_ijb_release(root, self.set_name)
        if folder is None:
            raise FileNotFoundError(f'no {self.set_name} release under {root}: looked for '
                                    + ' and '.join(searched) + f' (layout: <root>/{self.set_name}/meta, '
                                    f'<root>/{self.set_name}/loose_crop)')
        self.folder = folder
        self.files = files = ijb_files(folder, self.set_name)
        if not osp.isdir(files['loose_crop']):
            raise FileNotFoundError(f'{self.set_name} release in {folder} has no loose_crop folder: '
                                    f'{files["loose_crop"]}')
        self.names, self.templates, self.medias, face_lines = read_face_tid_mid(files['face_tid_mid'])
        names5, self.landmarks, self.detector_scores, lmk_lines = read_name_5pts_score(files['name_5pts_score'])
        self._check_same_images(names5, face_lines, lmk_lines)
        self.pair_t1, self.pair_t2, self.pair_labels = read_template_pair_label(files['template_pair_label'])
        self._check_pair_templates()
        self._check_images_exist()

    def _check_same_images(self, names5, face_lines, lmk_lines):
        a, b = self.files['face_tid_mid'], self.files['name_5pts_score']
        if len(names5) != len(self.names):
            raise IJBFormatError(f'{a} lists {len(self.names)} images but {b} lists {len(names5)}; '
                                 'row i of both files must describe the same image')
        for i, (x, y) in enumerate(zip(self.names, names5)):
            if x != y:
                raise IJBFormatError(f'image {i + 1} differs between {a}:{face_lines[i]} ({x!r}) and '
                                     f'{b}:{lmk_lines[i]} ({y!r}); row i of both files must describe the same image')

    def _check_pair_templates(self):
        known = np.unique(self.templates)
        for column in (self.pair_t1, self.pair_t2):
            unknown = np.flatnonzero(~np.isin(column, known))
            if unknown.size:
                row = int(unknown[0])
                path = self.files['template_pair_label']
                raise IJBFormatError(f'{path}:{_line_of_row(path, row)}: template {int(column[row])} has no image '
                                     f'in {self.files["face_tid_mid"]} ({unknown.size} pair entries name unknown '
                                     'templates)')

    def _check_images_exist(self):
        # before hours of embedding, not at image 400,000
        missing = [n for n in self.names if not osp.isfile(osp.join(self.files['loose_crop'], n))]
        if missing:
            listing = self.files['face_tid_mid']
            raise FileNotFoundError(f'{len(missing)} of {len(self.names)} images listed in {listing} are missing '
                                    f'from {self.files["loose_crop"]}, e.g. {", ".join(missing[:5])}')

    def __len__(self):
        return len(self.names)

    def __repr__(self):
        return (f'IJBRelease({self.set_name}, folder={self.folder!r}, images={len(self)}, '
                f'templates={np.unique(self.templates).size}, pairs={self.pair_labels.size})')

    def image_path(self, index):
        """Path of image ``index``'s loose crop."""
        return osp.join(self.files['loose_crop'], self.names[index])

    def aligned_face(self, index, landmarks=None):
        """Image ``index`` aligned to the ArcFace template: (image_size, image_size, 3) uint8 RGB.

        The loose crop is decoded whole and warped by the similarity transform that maps its five
        landmarks (or ``landmarks``, (5, 2) pixels) onto the template, bilinear, black outside.
        """
        path = self.image_path(index)
        try:
            with open(path, 'rb') as f:
                buf = f.read()
        except OSError as e:
            raise FileNotFoundError(f'image {index + 1} of {self.files["face_tid_mid"]} ({self.names[index]}) '
                                    f'cannot be read: {path} ({e.strerror or e})') from None
        rgb = decode_image(buf, source=path)
        points = self.landmarks[index] if landmarks is None else landmarks
        return align_face(rgb, points, image_size=self.image_size)
