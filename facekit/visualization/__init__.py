"""Pictures of a run and of an evaluation (matplotlib, Agg backend; nothing here needs a display).

``curves``: metrics.jsonl -> the series of loss, lr, gradient norm and each evaluation metric against
iteration, and ``curves.png``. ``figures``: score histograms of genuine and impostor pairs and
embedding-norm (XNorm) distributions for the test report. Each picture is drawn from a series that a
pure function prepares (``curve_series``, ``histogram_series``), so tests compare the plotted data
with the computed data without reading pixels.
"""
from .curves import curve_series, plot_curves, read_records  # noqa: F401
from .figures import histogram_series, plot_norm_histograms, plot_score_histogram  # noqa: F401
