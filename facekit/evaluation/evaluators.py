"""Registered evaluators (``BaseEvaluator`` subclasses): ``evaluate(model_or_embed_fn) -> dict``
over a test set, plus how their results are summarized, tabulated, logged and plotted.

``model_or_embed_fn`` is a MindSpore cell (a FaceRecognizer, whose ``extract`` is used, or a
bare backbone) or a callable ``(B, 3, 112, 112) float32 ndarray -> (B, E) ndarray``.
"""
import os.path as osp
import time

import numpy as np

from ..registry import DATASETS, EVALUATORS
from .base import BaseEvaluator, scalar_summary
from .embedding import as_embed_fn, decode_image, embed_images, flip_sum, inference_mode
from .reporting import SAMPLES_KEY, ascii_table, format_mean_std, format_value, plot_roc
from .tar_far import DEFAULT_FARS, NOT_AVAILABLE, aggregate_templates, roc_curve, tar_at_far, template_pair_scores
from .verification import equal_error_rate, l2_normalize, pair_distances, roc_auc, verification_metrics

__all__ = ['VerificationEvaluator', 'TarFarEvaluator', 'xnorm', 'embedding_norms', 'tar_key']


def embedding_norms(raw, raw_flip=None):
    """L2 norms of the raw (un-normalized) embeddings, float64: (N,), or (2N,) with the mirrored
    images' embeddings after the originals' (each taken separately, not flip-summed)."""
    norms = [np.linalg.norm(raw.astype(np.float64), axis=1)]
    if raw_flip is not None:
        norms.append(np.linalg.norm(raw_flip.astype(np.float64), axis=1))
    return np.concatenate(norms)


def xnorm(raw, raw_flip=None):
    """Mean L2 norm of the raw (un-normalized) embeddings, the reference's XNorm.

    As in insightface, the mean runs over the original images' embeddings and, with flip test,
    the mirrored images' embeddings too (2N vectors), each taken separately, not flip-summed.
    """
    return float(np.mean(embedding_norms(raw, raw_flip)))


@EVALUATORS.register_module()
class VerificationEvaluator(BaseEvaluator):
    """10-fold pair verification on a .bin file (lfw, cfp_fp, agedb_30, calfw, cplfw ...) or on
    pairs drawn from a labelled dataset.

    Primary metric: ``accuracy`` (10-fold mean, flip test when ``flip``). Summary: the result's
    scalars (per-fold lists and the ROC left out). Log lines: the reference script's XNorm,
    Accuracy (no flip) and Accuracy-Flip.

    Args:
        bin_path: path of a verification .bin (pickled encoded images + issame list).
        dataset: instead of ``bin_path``: a dataset (or its DATASETS config dict) yielding
            ``(HWC uint8 RGB, label)``; ``num_pairs`` pairs are drawn from it with ``seed``.
        name: the target name in tables and JSON; default the .bin file name without extension.
        nfolds: folds of the protocol (10).
        flip: flip test: embed each image and its mirror, sum, then L2-normalize.
        batch_size: images per forward pass.
        far_target: FAR of the reported VAL (1e-3).
        num_pairs: pairs drawn from ``dataset``.
        seed: seed of the pair drawing from ``dataset``.
    """

    primary_metric = 'accuracy'
    table_title = 'verification (10-fold)'

    def __init__(self, bin_path=None, dataset=None, name=None, nfolds=10, flip=True, batch_size=64,
                 far_target=1e-3, num_pairs=1000, seed=0):
        if (bin_path is None) == (dataset is None):
            raise ValueError('VerificationEvaluator needs exactly one of bin_path= or dataset=; '
                             f'got bin_path={bin_path!r}, dataset={"set" if dataset is not None else None}')
        self.bin_path = None if bin_path is None else str(bin_path)
        self.dataset = dataset
        if name is None:
            name = osp.splitext(osp.basename(self.bin_path))[0] if self.bin_path else 'pairs'
        self.name = name
        self.nfolds = int(nfolds)
        self.flip = bool(flip)
        self.batch_size = int(batch_size)
        self.far_target = float(far_target)
        self.num_pairs = int(num_pairs)
        self.seed = seed
        self._pairs = None

    def __repr__(self):
        src = self.bin_path or type(self.dataset).__name__
        return f'VerificationEvaluator(name={self.name!r}, source={src!r}, nfolds={self.nfolds}, flip={self.flip})'

    def load(self):
        """``(images, issame)``: 2N encoded images, (N,) bool. Read once, then cached."""
        if self._pairs is None:
            from ..datasets.verification_bin import load_bin, make_verification_bin
            if self.bin_path is not None:
                if not osp.isfile(self.bin_path):
                    raise FileNotFoundError(f'verification file for {self.name!r} not found: {self.bin_path}')
                self._pairs = load_bin(self.bin_path)
            else:
                dataset = self.dataset
                if isinstance(dataset, dict):
                    dataset = DATASETS.build(dataset)
                self._pairs = make_verification_bin(dataset, self.num_pairs, self.seed)
        return self._pairs

    def embed(self, model_or_fn, dist=None):
        """Raw embeddings ``(raw, raw_flip)``, (2N, E) float32 each (``raw_flip`` None without flip)."""
        images, _ = self.load()
        source = self.bin_path or self.name
        with inference_mode(model_or_fn):
            return embed_images(len(images), lambda i: decode_image(images[i], i, source),
                                as_embed_fn(model_or_fn), batch_size=self.batch_size, flip=self.flip, dist=dist,
                                source=f'{self.name} ({source})' if source != self.name else self.name)

    def compute_metrics(self, raw, raw_flip=None):
        """Protocol metrics from raw embeddings of images 0..2N-1 (pair i = images 2i, 2i+1).

        Returns ``verification_metrics`` of the flip-summed normalized embeddings (or of the
        plain ones without flip) plus ``accuracy_noflip``/``accuracy_noflip_std`` (the same
        protocol on the original images only), ``xnorm``, ``flip``, ``name``.
        """
        _, issame = self.load()
        if raw.shape[0] != 2 * issame.size:
            raise ValueError(f'{self.name}: {raw.shape[0]} embeddings for {issame.size} pairs')
        emb = l2_normalize(flip_sum(raw, raw_flip))
        result = dict(name=self.name, flip=self.flip)
        result.update(verification_metrics(emb[0::2], emb[1::2], issame, nfolds=self.nfolds,
                                           far_target=self.far_target))
        if raw_flip is not None:
            plain = l2_normalize(raw)
            noflip = verification_metrics(plain[0::2], plain[1::2], issame, nfolds=self.nfolds,
                                          far_target=self.far_target)
            result['accuracy_noflip'] = noflip['accuracy']
            result['accuracy_noflip_std'] = noflip['accuracy_std']
        else:
            result['accuracy_noflip'] = result['accuracy']
            result['accuracy_noflip_std'] = result['accuracy_std']
        norms = embedding_norms(raw, raw_flip)
        result['xnorm'] = float(np.mean(norms))
        # per-pair and per-image arrays for the report's figures (reporting.SAMPLES_KEY; left out
        # of summaries, tables and result JSON)
        result[SAMPLES_KEY] = dict(distances=pair_distances(emb[0::2], emb[1::2]),
                                   issame=np.asarray(issame, dtype=bool), norms=norms)
        return result

    def evaluate(self, model_or_fn, dist=None):
        """Embed every image (and its mirror) and run the protocol; returns a dict (see compute_metrics).

        Args:
            model_or_fn: nn.Cell or callable ``(B,3,112,112) float32 -> (B,E)``.
            dist: ``DistInfo`` to shard the embedding over ranks (every rank must call this);
                None embeds everything in this process.
        """
        t0 = time.perf_counter()
        raw, raw_flip = self.embed(model_or_fn, dist=dist)
        seconds = time.perf_counter() - t0
        result = self.compute_metrics(raw, raw_flip)
        result['embed_seconds'] = seconds
        result['num_images'] = int(raw.shape[0])
        return result

    def log_lines(self, result):
        """The reference script's three lines: XNorm, Accuracy (original images), Accuracy-Flip."""
        r = result
        flip = format_mean_std(r['accuracy'], r['accuracy_std']) if r['flip'] else 'n/a (no flip test)'
        seconds = f"  ({r['embed_seconds']:.1f} s embedding)" if 'embed_seconds' in r else ''
        return [f"[{self.name}]XNorm: {r['xnorm']:f}",
                f"[{self.name}]Accuracy: {format_mean_std(r['accuracy_noflip'], r['accuracy_noflip_std'])}",
                f"[{self.name}]Accuracy-Flip: {flip}{seconds}"]

    def plot(self, result, path):
        """The fold-averaged ROC (held-out folds, 400 thresholds) as a PNG; returns ``path``."""
        return plot_roc({self.name: (result['fpr'], result['tpr'])}, path, title=self.name)

    def roc(self, result):
        """The fold-averaged ROC on the threshold grid."""
        return result['fpr'], result['tpr']

    def score_distribution(self, result):
        """Squared distances of the pairs' flip-summed normalized embeddings; the threshold is the
        mean of the per-fold thresholds (``best_threshold``), their spread shaded."""
        samples = result.get(SAMPLES_KEY)
        if samples is None:
            return None
        dist, same = np.asarray(samples['distances']), np.asarray(samples['issame'], dtype=bool)
        folds = result.get('fold_thresholds') or [result['best_threshold']]
        kind = 'flip-summed, L2-normalized' if result['flip'] else 'L2-normalized'
        return dict(genuine=dist[same], impostor=dist[~same], threshold=float(result['best_threshold']),
                    threshold_range=(float(min(folds)), float(max(folds))),
                    xlabel=f'squared L2 distance of the pair\'s {kind} embeddings\n(0 = same direction, 4 = opposite)',
                    rule=f"mean of {len(folds)} fold thresholds; 'same' below")

    def embedding_norms(self, result):
        """Norms of the raw embeddings of every image (and mirror): their mean is ``xnorm``."""
        samples = result.get(SAMPLES_KEY)
        return None if samples is None else np.asarray(samples['norms'])

    @classmethod
    def table(cls, results, title=None):
        """One row per target; returns the table as text.

        Columns: Accuracy-Flip (mean+-std, the reference table's number format 0.99817+-0.00229;
        'n/a' without flip test), Accuracy (no flip), best threshold (mean over folds), XNorm,
        VAL@FAR, AUC, EER.
        """
        header = ['target', 'Accuracy-Flip', 'Accuracy', 'threshold', 'XNorm', 'VAL@FAR', 'AUC', 'EER']
        rows = [header]
        for name, r in results.items():
            flip = format_mean_std(r['accuracy'], r['accuracy_std']) if r['flip'] else 'n/a'
            noflip = format_mean_std(r['accuracy_noflip'], r['accuracy_noflip_std'])
            val = f"{format_mean_std(r['val'], r['val_std'])} @ {r['far']:.5f}"
            rows.append([name, flip, noflip, format_value(r['best_threshold'], 3), format_value(r['xnorm'], 3),
                         val, format_value(r['auc']), format_value(r['eer'])])
        return ascii_table(rows, title or cls.table_title)


def _read_rows(path, min_cols, what):
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    rows = []
    with open(path, encoding='utf-8') as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0].startswith('#'):
                continue
            if len(parts) < min_cols:
                raise ValueError(f'{path}:{lineno}: expected at least {min_cols} columns for {what}, got {line.strip()!r}')
            rows.append(parts)
    if not rows:
        raise ValueError(f'{path}: no entries in {what}')
    return rows


def _label(value, path):
    if value not in ('0', '1'):
        raise ValueError(f'{path}: labels must be 0 or 1, got {value!r}')
    return value == '1'


def far_label(far):
    """``1e-04`` for a power of ten as the IJB tables write it, the exact decimal otherwise (``0.25``)."""
    short = f'{float(far):.0e}'
    return short if float(short) == float(far) else repr(float(far))


def tar_key(far):
    """Summary key of the TAR at ``far``: ``'tar@far=1e-04'`` (``'tar@far=' + far_label(far)``)."""
    return f'tar@far={far_label(far)}'


@EVALUATORS.register_module()
class TarFarEvaluator(BaseEvaluator):
    """TAR at fixed FARs over all pair scores: simple image pair lists or IJB-B/C template lists.

    Primary metric: ``tar@far=1e-04`` when 1e-4 is among ``fars`` (the IJB tables' headline),
    else the TAR at the smallest FAR asked for; its value is None when that FAR is 'n/a' on the
    pair set. Summary: ``tar@far=<far>`` keys (None for 'n/a'), ``auc``, ``eer``, pair counts
    (the ROC left out).

    Give either ``pair_list`` (lines ``image1 image2 label``) or ``face_list`` (lines
    ``image template_id media_id [face_score]``) with ``template_pairs`` (lines
    ``template1 template2 label``). Image paths are relative to ``image_root`` and must be
    aligned square crops (112x112; other square sizes are resized).

    Args:
        pair_list: pair list file (score = cosine of the two flip-summed image embeddings).
        face_list: IJB image list with template and media ids (and optional detector score).
        template_pairs: IJB template pair list.
        image_root: folder the image paths are relative to.
        name: target name in tables and JSON.
        fars: FAR targets; a FAR below 1 / impostor pairs reports 'n/a'.
        flip: flip test (sum of the image's and its mirror's raw embeddings).
        batch_size: images per forward pass.
        normalize_images: templates: L2-normalize each image feature before media averaging
            (IJB reference default keeps the norm).
        use_face_scores: templates: weight image features by the face_list's 4th column.
        roc_points: at most this many ROC points are kept in the result for plots.
    """

    table_title = 'TAR @ FAR'

    def __init__(self, pair_list=None, face_list=None, template_pairs=None, image_root='', name='tar_far',
                 fars=DEFAULT_FARS, flip=True, batch_size=64, normalize_images=False, use_face_scores=False,
                 roc_points=1000):
        if (pair_list is None) == (face_list is None):
            raise ValueError('TarFarEvaluator needs exactly one of pair_list= or face_list= (+ template_pairs=)')
        if face_list is not None and template_pairs is None:
            raise ValueError('TarFarEvaluator: face_list= needs template_pairs=')
        self.pair_list, self.face_list, self.template_pairs = pair_list, face_list, template_pairs
        self.image_root = str(image_root)
        self.name = name
        self.flip = bool(flip)
        self.batch_size = int(batch_size)
        self.normalize_images = bool(normalize_images)
        self.use_face_scores = bool(use_face_scores)
        self._set_fars(fars, roc_points)

    def _set_fars(self, fars, roc_points):
        """``fars``, ``roc_points`` and the primary metric (what ``compute_metrics`` and ``summary`` use)."""
        self.fars = tuple(float(f) for f in fars)
        self.roc_points = int(roc_points)
        if not self.fars:
            raise ValueError(f'{type(self).__name__} needs at least one FAR in fars=')
        self.primary_metric = tar_key(1e-4 if 1e-4 in self.fars else min(self.fars))

    def __repr__(self):
        src = self.pair_list or self.face_list
        return f'TarFarEvaluator(name={self.name!r}, source={src!r}, fars={self.fars})'

    def _image_paths_and_pairs(self):
        """(unique image paths, per-image template ids, media ids, face scores, pair index arrays, labels)."""
        if self.pair_list is not None:
            rows = _read_rows(self.pair_list, 3, 'pair list')
            paths, index = [], {}
            a, b = [], []
            for r in rows:
                for p, dest in ((r[0], a), (r[1], b)):
                    if p not in index:
                        index[p] = len(paths)
                        paths.append(p)
                    dest.append(index[p])
            labels = np.array([_label(r[2], self.pair_list) for r in rows], dtype=bool)
            return paths, None, np.array(a), np.array(b), labels
        faces = _read_rows(self.face_list, 3, 'face list')
        pairs = _read_rows(self.template_pairs, 3, 'template pair list')
        meta = dict(paths=[r[0] for r in faces], templates=np.array([r[1] for r in faces]),
                    medias=np.array([r[2] for r in faces]))
        if self.use_face_scores:
            if any(len(r) < 4 for r in faces):
                raise ValueError(f'{self.face_list}: use_face_scores=True needs a 4th column (face score)')
            meta['weights'] = np.array([float(r[3]) for r in faces])
        t1 = np.array([r[0] for r in pairs])
        t2 = np.array([r[1] for r in pairs])
        labels = np.array([_label(r[2], self.template_pairs) for r in pairs], dtype=bool)
        return meta['paths'], meta, t1, t2, labels

    def _read_image(self, rel_path, index):
        path = osp.join(self.image_root, rel_path)
        try:
            with open(path, 'rb') as f:
                buf = f.read()
        except OSError as e:
            raise FileNotFoundError(f'image {index} of {self.name!r} cannot be read: {path} ({e})') from e
        return decode_image(buf, index, path)

    def evaluate(self, model_or_fn, dist=None):
        """Embed all images, score all pairs, return TAR@FAR, AUC, EER and a thinned ROC."""
        paths, meta, first, second, labels = self._image_paths_and_pairs()
        t0 = time.perf_counter()
        with inference_mode(model_or_fn):
            raw, raw_flip = embed_images(len(paths), lambda i: self._read_image(paths[i], i),
                                         as_embed_fn(model_or_fn), batch_size=self.batch_size, flip=self.flip,
                                         dist=dist, source=f'{self.name} ({self.image_root})')
        seconds = time.perf_counter() - t0
        feats = flip_sum(raw, raw_flip)
        if meta is None:
            emb = l2_normalize(feats)
            scores = np.sum(emb[first].astype(np.float64) * emb[second], axis=1)
        else:
            tfeats, tids = aggregate_templates(feats, meta['templates'], meta['medias'],
                                               normalize_images=self.normalize_images,
                                               weights=meta.get('weights'))
            scores = template_pair_scores(tfeats, tids, first, second).astype(np.float64)
        return self.compute_metrics(scores, labels, extra=dict(embed_seconds=seconds, num_images=len(paths)))

    def compute_metrics(self, scores, labels, extra=None):
        """Metrics from pair scores (higher = more similar) and labels."""
        labels = np.asarray(labels, dtype=bool)
        fpr, tpr, _ = roc_curve(scores, labels)
        keep = _thin_roc(fpr, self.roc_points)
        result = dict(name=self.name, tar_at_far=tar_at_far(scores, labels, self.fars),
                      auc=roc_auc(scores, labels), eer=equal_error_rate(scores, labels),
                      num_genuine=int(labels.sum()), num_impostors=int((~labels).sum()),
                      fpr=fpr[keep].tolist(), tpr=tpr[keep].tolist())
        result.update(extra or {})
        return result

    def summary(self, result):
        """Scalars of ``result`` with ``tar_at_far`` spread over ``tar@far=<far>`` keys (None for 'n/a')."""
        out = scalar_summary({k: v for k, v in result.items() if k != 'tar_at_far'})
        for far, tar in result['tar_at_far'].items():
            out[tar_key(far)] = None if tar == NOT_AVAILABLE else float(tar)
        return out

    def log_lines(self, result):
        """``[name]TAR@FAR: 1e-04 95.02 | ...`` (percent) and ``[name]AUC: ... EER: ...``."""
        cells = ' | '.join(f'{far_label(far)} {_percent(tar)}' for far, tar in result['tar_at_far'].items())
        return [f'[{self.name}]TAR@FAR: {cells}',
                f"[{self.name}]AUC: {format_value(result['auc'])} EER: {format_value(result['eer'])}"]

    def plot(self, result, path):
        """The ROC of all pair scores (thinned to ``roc_points``) as a PNG; returns ``path``."""
        return plot_roc({self.name: (result['fpr'], result['tpr'])}, path, title=self.name)

    def roc(self, result):
        """The ROC of all pair scores, thinned to ``roc_points``."""
        return result['fpr'], result['tpr']

    @classmethod
    def table(cls, results, title=None):
        """One row per target, one column per FAR (union over targets, ascending); TAR in percent
        as the IJB tables print it, 'n/a' where a FAR is not measurable or was not asked for."""
        fars = sorted({float(far) for r in results.values() for far in r['tar_at_far']})
        rows = [['target'] + [far_label(f) for f in fars]]
        for name, r in results.items():
            by_far = {float(k): v for k, v in r['tar_at_far'].items()}
            rows.append([name] + [_percent(by_far.get(f, NOT_AVAILABLE)) for f in fars])
        return ascii_table(rows, title or cls.table_title)


def _percent(tar):
    return tar if isinstance(tar, str) else f'{100.0 * tar:.2f}'


def _thin_roc(fpr, max_points):
    """Indices of at most ``max_points`` ROC points, spread evenly in log(FPR), ends kept."""
    n = fpr.size
    if n <= max_points:
        return np.arange(n)
    positive = np.maximum(fpr, 1e-12)
    targets = np.logspace(np.log10(positive[positive > 1e-12].min()), 0, max_points - 2)
    idx = np.searchsorted(fpr, targets, side='left')
    return np.unique(np.r_[0, np.clip(idx, 0, n - 1), n - 1])
