"""A small synthetic IJB-B/C release in the official layout, for the IJB tests.

Every image is a held-out synthetic identity rendered 112x112 (so it is already in the ArcFace
layout and its five landmarks are the template points), warped by a known similarity transform
(scale, rotation, position) into a larger loose crop on a noise background. The landmarks written
to ``*_name_5pts_score.txt`` are the template points mapped by that transform, with three decimals
as in the official file. Templates hold one to three media (videos), each with one to three frames,
so media averaging differs from plain image averaging; detector scores vary from 0.2 to 1.0.
"""
import os
import os.path as osp

import cv2
import numpy as np

# the ArcFace 5-point template (112x112), written out here so the test does not take it from the code
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]])


def place_in_loose_crop(face, rng):
    """Warp a 112x112 face into a larger noisy canvas; returns ``(loose RGB, M (2x3) face -> loose)``."""
    scale = rng.uniform(1.1, 1.7)
    angle = rng.uniform(-20.0, 20.0)
    side = int(np.ceil(112 * scale * 1.5)) + int(rng.integers(0, 40))
    matrix = cv2.getRotationMatrix2D((56.0, 56.0), angle, scale)
    half = 56.0 * scale * 1.42  # the rotated face's half diagonal stays inside the canvas
    centre = rng.uniform(half, side - half, size=2)
    matrix[:, 2] += centre - 56.0
    canvas = rng.integers(40, 216, size=(side, side, 3), dtype=np.uint8)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 2.0)
    loose = cv2.warpAffine(face, matrix, (side, side), dst=canvas, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_TRANSPARENT)
    return loose, matrix


def write_release(root, set_name='IJBC', num_subjects=20, templates_per_subject=4, seed=0,
                  identity_offset=7000):
    """Write ``<root>/<set_name>/{loose_crop,meta}``; returns what was written.

    Returns: dict with ``folder``, per image ``names``, ``templates``, ``medias``, ``scores``
    (float32 as written), ``landmarks`` ((N, 5, 2) as written), ``matrices`` ((N, 2, 3) face ->
    loose), ``faces`` ((N, 112, 112, 3) the rendered faces), per pair ``t1``, ``t2``, ``labels``,
    and ``files`` (the three meta paths).
    """
    from facekit.datasets.synthetic import render_identity_image

    rng = np.random.default_rng(seed)
    folder = osp.join(str(root), set_name)
    low = set_name.lower()
    os.makedirs(osp.join(folder, 'loose_crop'), exist_ok=True)
    os.makedirs(osp.join(folder, 'meta'), exist_ok=True)
    num_templates = num_subjects * templates_per_subject
    template_ids = rng.choice(np.arange(1, 20 * num_templates), size=num_templates, replace=False)
    rec = dict(names=[], templates=[], medias=[], scores=[], landmarks=[], matrices=[], faces=[])
    subject_of = {}
    media_id = 60000
    for subject in range(num_subjects):
        frame = 0
        for j in range(templates_per_subject):
            tid = int(template_ids[subject * templates_per_subject + j])
            subject_of[tid] = subject
            for _ in range(int(rng.integers(1, 4))):
                media_id += int(rng.integers(1, 50))
                for _ in range(int(rng.integers(1, 4))):
                    face = render_identity_image(identity_offset + subject, frame, seed=seed)
                    frame += 1
                    loose, matrix = place_in_loose_crop(face, rng)
                    name = f'{len(rec["names"]) + 1}.jpg'
                    cv2.imwrite(osp.join(folder, 'loose_crop', name), cv2.cvtColor(loose, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, 95])
                    points = TEMPLATE @ matrix[:, :2].T + matrix[:, 2]
                    rec['names'].append(name)
                    rec['templates'].append(tid)
                    rec['medias'].append(media_id)
                    rec['scores'].append(round(float(rng.uniform(0.2, 1.0)), 3))
                    rec['landmarks'].append(np.round(points, 3))
                    rec['matrices'].append(matrix)
                    rec['faces'].append(face)
    files = dict(face_tid_mid=osp.join(folder, 'meta', f'{low}_face_tid_mid.txt'),
                 name_5pts_score=osp.join(folder, 'meta', f'{low}_name_5pts_score.txt'),
                 template_pair_label=osp.join(folder, 'meta', f'{low}_template_pair_label.txt'))
    with open(files['face_tid_mid'], 'w') as f:
        for name, t, m in zip(rec['names'], rec['templates'], rec['medias']):
            f.write(f'{name} {t} {m}\n')
    with open(files['name_5pts_score'], 'w') as f:
        for name, points, score in zip(rec['names'], rec['landmarks'], rec['scores']):
            f.write(name + ' ' + ' '.join(f'{v:.3f}' for v in points.ravel()) + f' {score:.3f}\n')
    ordered = [int(t) for t in template_ids]
    pairs = [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:]]
    pairs = [pairs[k] for k in rng.permutation(len(pairs))]
    labels = [int(subject_of[a] == subject_of[b]) for a, b in pairs]
    with open(files['template_pair_label'], 'w') as f:
        for (a, b), y in zip(pairs, labels):
            f.write(f'{a} {b} {y}\n')
    return dict(folder=folder, files=files, names=rec['names'],
                templates=np.array(rec['templates'], dtype=np.int64), medias=np.array(rec['medias'], dtype=np.int64),
                scores=np.array(rec['scores'], dtype=np.float32), landmarks=np.array(rec['landmarks']),
                matrices=np.array(rec['matrices']), faces=np.array(rec['faces']),
                t1=np.array([a for a, _ in pairs], dtype=np.int64), t2=np.array([b for _, b in pairs], dtype=np.int64),
                labels=np.array(labels, dtype=bool))
