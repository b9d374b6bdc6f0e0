"""IJB-B / IJB-C 1:1 template verification from the official release, computed as insightface's
``recognition/_evaluation_/ijb/ijb_11.py`` and arcface_torch's ``eval_ijbc.py`` compute it.

1. Each loose crop is aligned to 112x112 with its five landmarks (``facekit.datasets.ijb``).
2. Image feature = raw embedding of the crop + raw embedding of its mirror (``flip=True``; the
   reference's ``use_flip_test``), not normalized.
3. ``use_norm_score=True`` (reference default) keeps the feature norm as a quality weight;
   False L2-normalizes each image feature.
4. ``use_detector_score=True`` (reference default) multiplies each image feature by its
   detector score (last column of ``*_name_5pts_score.txt``), after step 3.
5. Per template: features of one media are averaged, the media features summed, the sum
   L2-normalized (``tar_far.aggregate_templates``). Pair score = cosine of the two templates.
6. TAR at FAR 1e-6 ... 1e-1 from the ROC by the reference's closest-FPR rule (``tar_far``).

Images are decoded and aligned one batch at a time (``embedding.embed_images``), so memory holds
the embeddings, never the release's images.
"""
import time

import numpy as np

from ..datasets.ijb import IJBRelease, ijb_set_name
from ..registry import EVALUATORS
from .embedding import as_embed_fn, embed_images, inference_mode
from .evaluators import TarFarEvaluator, _percent
from .reporting import ascii_table, plot_roc
from .tar_far import DEFAULT_FARS, NOT_AVAILABLE, aggregate_templates, template_pair_scores

__all__ = ['IJBEvaluator', 'reference_far_label']


def reference_far_label(far):
    """A FAR as the reference table's column header writes it: Python's ``str`` of the float
    (``1e-06``, ``1e-05``, ``0.0001``, ``0.001``, ``0.01``, ``0.1``)."""
    return str(float(far))


@EVALUATORS.register_module()
class IJBEvaluator(TarFarEvaluator):
    """IJB-B / IJB-C 1:1 verification (TAR at FAR over all template pairs) on the official release.

    Layout read: ``<root>/IJBC/meta/ijbc_face_tid_mid.txt``, ``ijbc_name_5pts_score.txt``,
    ``ijbc_template_pair_label.txt`` and ``<root>/IJBC/loose_crop/*.jpg`` (``IJBB``/``ijbb_*``
    alike); ``root`` may also be the ``IJBC`` folder itself. Results, summary keys and log lines
    are ``TarFarEvaluator``'s; the table is the reference's (``Methods`` column, FAR headers as
    Python prints them, TAR in percent with two decimals).

    Args:
        root: folder holding the set folder (``IJBC/``), or the set folder.
        set_name: ``'IJBC'`` or ``'IJBB'`` (any case).
        name: target name in tables, JSON and checkpoint names; default the set in lower case.
        fars: FAR targets; a FAR below 1 / impostor pairs reports 'n/a'.
        flip: add the mirrored crop's embedding to the image feature (reference ``use_flip_test``).
        batch_size: images per forward pass.
        use_norm_score: keep each image feature's norm (True, reference default) or L2-normalize it.
        use_detector_score: multiply each image feature by its detector score (True, reference default).
        roc_points: at most this many ROC points are kept in the result for plots.
    """

    table_title = 'IJB 1:1 verification, TAR (%) @ FAR'

    def __init__(self, root, set_name='IJBC', name=None, fars=DEFAULT_FARS, flip=True, batch_size=64,
                 use_norm_score=True, use_detector_score=True, roc_points=1000):
        # not TarFarEvaluator.__init__: its list-file arguments do not apply; _set_fars sets what
        # its metric, summary, log and plot methods use
        self.root = str(root)
        self.set_name = ijb_set_name(set_name)
        self.name = name or self.set_name.lower()
        self.flip = bool(flip)
        self.batch_size = int(batch_size)
        self.use_norm_score = bool(use_norm_score)
        self.use_detector_score = bool(use_detector_score)
        self._set_fars(fars, roc_points)
        self._release = None

    def __repr__(self):
        return (f'IJBEvaluator(name={self.name!r}, set_name={self.set_name!r}, root={self.root!r}, '
                f'use_norm_score={self.use_norm_score}, use_detector_score={self.use_detector_score})')

    def release(self):
        """The ``IJBRelease`` (meta files read and checked once, then cached)."""
        if self._release is None:
            self._release = IJBRelease(self.root, self.set_name)
        return self._release

    def pair_scores(self, raw, raw_flip=None):
        """Template pair scores from raw image embeddings (rows in the meta files' order).

        Args:
            raw: (N, E) raw embeddings of the aligned crops.
            raw_flip: (N, E) raw embeddings of their mirrors, or None (no flip test).
        Returns: ``(scores, labels)``: (P,) float64 cosine similarities and (P,) bool, in the
        order of the pair file.
        """
        release = self.release()
        feats = raw if raw_flip is None else np.add(raw, raw_flip, dtype=np.float32)
        weights = release.detector_scores if self.use_detector_score else None
        template_feats, template_ids = aggregate_templates(feats, release.templates, release.medias,
                                                           normalize_images=not self.use_norm_score,
                                                           weights=weights)
        scores = template_pair_scores(template_feats, template_ids, release.pair_t1, release.pair_t2)
        return scores, release.pair_labels

    def evaluate(self, model_or_fn, dist=None):
        """Align and embed every loose crop (and its mirror), build templates, score all pairs.

        Returns ``TarFarEvaluator.compute_metrics``' dict plus ``set_name``, ``root``, ``flip``,
        ``use_norm_score``, ``use_detector_score``, ``num_images``, ``num_templates`` and
        ``embed_seconds``.
        """
        release = self.release()
        t0 = time.perf_counter()
        with inference_mode(model_or_fn):
            raw, raw_flip = embed_images(len(release), release.aligned_face, as_embed_fn(model_or_fn),
                                         batch_size=self.batch_size, flip=self.flip, dist=dist,
                                         source=f'{self.name} ({release.folder})')
        seconds = time.perf_counter() - t0
        if raw_flip is not None:  # sum in place: at IJB-C size each array is ~1 GB
            raw += raw_flip
            raw_flip = None
        scores, labels = self.pair_scores(raw)
        extra = dict(set_name=self.set_name, root=release.folder, flip=self.flip,
                     use_norm_score=self.use_norm_score, use_detector_score=self.use_detector_score,
                     num_images=len(release), num_templates=int(np.unique(release.templates).size),
                     embed_seconds=seconds)
        return self.compute_metrics(scores, labels, extra=extra)

    def plot(self, result, path):
        """The ROC of all template pairs (log FAR axis) with its AUC in the legend; returns ``path``."""
        label = f"{self.name} (AUC = {100.0 * result['auc']:.4f} %)"
        return plot_roc({label: (result['fpr'], result['tpr'])}, path, title=f'ROC on {result["set_name"]}')

    @classmethod
    def table(cls, results, title=None):
        """The reference's TPR@FPR table: row ``<name>-<SET>`` (``ijbc-IJBC``), one column per FAR
        headed as Python prints the float, TAR in percent with two decimals; 'n/a' where a FAR is
        not measurable on the pair set or was not asked for."""
        fars = sorted({float(far) for r in results.values() for far in r['tar_at_far']})
        rows = [['Methods'] + [reference_far_label(f) for f in fars]]
        for name, r in results.items():
            by_far = {float(k): v for k, v in r['tar_at_far'].items()}
            rows.append([f"{name}-{r['set_name']}"] + [_percent(by_far.get(f, NOT_AVAILABLE)) for f in fars])
        return ascii_table(rows, title or cls.table_title)
