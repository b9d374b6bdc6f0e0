"""The raw-pixel floor: verification accuracy of comparing normalized pixels directly.

A trained model's accuracy means something only well above this floor: on the bundled synthetic
identities the geometry (rotation, shift, part jitter) is what pixels cannot undo, so the floor stays
low while a learned embedding clears it (docs/training.md has the measured floors). It runs the same 10-fold protocol as embeddings
(``facekit.evaluation.verification.verification_metrics``).
"""
import os

import numpy as np

from ..datasets.preprocess import normalize
from ..datasets.verification_bin import decode_pairs, load_bin
from .verification import l2_normalize, verification_metrics

__all__ = ['raw_pixel_floor']


def raw_pixel_floor(bin_or_pairs, nfolds=10, flip=False, standardize=False):
    """Verification accuracy of raw pixels: the floor a trained model must clear.

    Each image is normalized as the model input (``preprocess.normalize``: ``(x/255 - 0.5)/0.5``),
    flattened (optionally summed with its horizontal flip, as the flip test does for embeddings)
    and L2-normalized; the pairs then go through the 10-fold protocol (squared Euclidean
    distance, thresholds 0..4 step 0.01, contiguous folds).

    Args:
        bin_or_pairs: a .bin path or an ``(images, issame)`` pair as from ``load_bin``.
        nfolds: folds of the protocol.
        flip: sum each image with its mirror before normalizing.
        standardize: first subtract each image's per-channel mean and divide by its std,
            which undoes global brightness/colour casts; this stricter floor shows how much
            of the task such a one-line normalization already solves.
    Returns:
        dict(accuracy, accuracy_std, best_threshold, auc, num_pairs).
    """
    if isinstance(bin_or_pairs, (str, os.PathLike)):
        source = os.fspath(bin_or_pairs)
        images, issame = load_bin(source)
    else:
        source = 'pairs'
        images, issame = bin_or_pairs
    pix = normalize(decode_pairs(images, source=source))
    if standardize:
        mean = pix.mean(axis=(1, 2), keepdims=True)
        std = pix.std(axis=(1, 2), keepdims=True)
        pix = (pix - mean) / (std + np.float32(1e-6))
    if flip:
        pix = pix + pix[:, :, ::-1]
    x = l2_normalize(pix.reshape(len(pix), -1))
    m = verification_metrics(x[0::2], x[1::2], np.asarray(issame, dtype=bool), nfolds=nfolds)
    return {k: m[k] for k in ('accuracy', 'accuracy_std', 'best_threshold', 'auc', 'num_pairs')}


def floor_report(evaluators, results):
    """Each pair-verification target beside the raw-pixel floors of its own pairs.

    The floor is the accuracy of normalized pixels (plain or flip-summed, the higher) under the same
    10-fold protocol; the standardized floor first brings each image's channels to zero mean and
    unit std (it undoes colour casts). A trained model must clear both by a margin.

    Returns ``(table text or '', {name: {raw_pixel_floor, raw_pixel_floor_std, standardized_floor,
    standardized_floor_std}})`` for the VerificationEvaluators among ``evaluators``.
    """
    from .evaluators import VerificationEvaluator
    from .reporting import format_mean_std, ascii_table
    rows = [['target', 'trained (flip)', 'raw-pixel floor', 'margin', 'standardized floor', 'margin']]
    extra = {}
    for ev in evaluators:
        if not isinstance(ev, VerificationEvaluator):
            continue
        r = results[ev.name]
        pairs = ev.load()
        floors = {}
        for standardize in (False, True):
            candidates = [raw_pixel_floor(pairs, nfolds=ev.nfolds, flip=flip, standardize=standardize)
                          for flip in (False, True)]
            floors[standardize] = max(candidates, key=lambda f: f['accuracy'])
        raw, std = floors[False], floors[True]
        extra[ev.name] = dict(raw_pixel_floor=raw['accuracy'], raw_pixel_floor_std=raw['accuracy_std'],
                              standardized_floor=std['accuracy'], standardized_floor_std=std['accuracy_std'])
        rows.append([ev.name, format_mean_std(r['accuracy'], r['accuracy_std']),
                     format_mean_std(raw['accuracy'], raw['accuracy_std']), f"{r['accuracy'] - raw['accuracy']:+.5f}",
                     format_mean_std(std['accuracy'], std['accuracy_std']), f"{r['accuracy'] - std['accuracy']:+.5f}"])
    if len(rows) == 1:
        return '', extra
    return ascii_table(rows, 'held-out verification vs the raw-pixel floor'), extra
