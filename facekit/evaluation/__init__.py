"""facekit.evaluation: the 10-fold verification protocol, TAR@FAR (IJB style), IJB-B/C from the
official release, the evaluator contract (``BaseEvaluator``), evaluators, target selection, tables,
JSON and ROC plots."""
from .base import BaseEvaluator, EvaluatorAdapter, as_evaluator, evaluate_all, scalar_summary  # noqa: F401
from .embedding import (DistInfo, NonFiniteEmbeddingError, as_embed_fn, batch_plan,  # noqa: F401
                        check_finite_embeddings, decode_image, embed_images, inference_mode, to_model_input)
from .evaluators import TarFarEvaluator, VerificationEvaluator, tar_key, xnorm  # noqa: F401
from .ijb import IJBEvaluator  # noqa: F401
from .reporting import format_mean_std, plot_roc, report, write_json  # noqa: F401
from .tar_far import aggregate_templates, roc_curve, tar_at_far, template_pair_scores  # noqa: F401
from .targets import data_roots, test_evaluator_cfgs  # noqa: F401
from .verification import kfold_splits, l2_normalize, verification_metrics  # noqa: F401
