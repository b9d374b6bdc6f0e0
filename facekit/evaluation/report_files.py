"""The report folder of a test run (``tools/test.py --report DIR``): tables and pictures in one place.

    results.txt          every evaluator's table, as printed
    results.md           the same tables in Markdown
    results.json         {"checkpoint", "config", "results": {target: scalar summary}}
    roc.png              the ROC of every target that has one (``BaseEvaluator.roc``), one figure
    scores_<target>.png  genuine vs impostor pair scores with the chosen threshold
                         (``BaseEvaluator.score_distribution``)
    xnorm.png            the raw embedding norms of every target (``BaseEvaluator.embedding_norms``)

A figure is written only for evaluators that provide its data; ``report_data`` gathers exactly what
the figures draw.
"""
import os
import os.path as osp
import re

from .base import as_evaluator
from .reporting import plot_roc, report, write_json

__all__ = ['write_report', 'report_data', 'ascii_to_markdown', 'file_stem']


def file_stem(name):
    """A target name as a safe file-name part (``cfp_fp`` stays, ``a/b c`` -> ``a_b_c``)."""
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', str(name)).strip('._') or 'target'


def _border_title(line):
    """The title written into a terminaltables border line (``+title----+``), '' when none."""
    return line.strip().strip('+-').split('+')[0].rstrip('-').strip()


def ascii_to_markdown(text):
    """Tables as ``reporting.ascii_table`` draws them (terminaltables ``AsciiTable``) -> Markdown.

    Each table becomes an optional ``### title`` line, its header row, a ``|---|`` rule and its data
    rows; any other line is dropped. A table starts at a border line with a title, or at a border
    line that follows another border (an untitled table's top).
    """
    tables, current, prev_border = [], None, True
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith('+') and stripped.endswith('+'):
            title = _border_title(stripped)
            if title or prev_border or current is None:
                current = dict(title=title, rows=[])
                tables.append(current)
            prev_border = True
        elif stripped.startswith('|') and current is not None:
            current['rows'].append([c.strip() for c in stripped.strip('|').split('|')])
            prev_border = False
    out = []
    for t in tables:
        if not t['rows']:
            continue
        if t['title']:
            out.append(f"### {t['title']}\n")
        header, *rows = t['rows']
        out.append('| ' + ' | '.join(header) + ' |')
        out.append('|' + '---|' * len(header))
        out.extend('| ' + ' | '.join(r) + ' |' for r in rows)
        out.append('')
    return '\n'.join(out)


def report_data(evaluators, results):
    """What the report's figures draw: ``dict(roc={name: (fpr, tpr)}, scores={name: score_distribution},
    norms={name: norms})``, each holding only the evaluators that provide that data."""
    data = dict(roc={}, scores={}, norms={})
    for ev in (as_evaluator(e) for e in evaluators):
        if ev.name not in results:
            continue
        result = results[ev.name]
        for key, method in (('roc', ev.roc), ('scores', ev.score_distribution), ('norms', ev.embedding_norms)):
            value = method(result)
            if value is not None:
                data[key][ev.name] = value
    return data


def write_report(evaluators, results, out_dir, checkpoint=None, config=None):
    """Write the report folder (see the module doc); returns the paths written, in that order."""
    evaluators = [as_evaluator(e) for e in evaluators]
    os.makedirs(out_dir, exist_ok=True)
    text = report(evaluators, results)
    paths = []
    for name, content in (('results.txt', text + '\n'), ('results.md', ascii_to_markdown(text))):
        path = osp.join(out_dir, name)
        with open(path, 'w', encoding='utf-8') as f:
            f.write(content)
        paths.append(path)
    summaries = {ev.name: ev.summary(results[ev.name]) for ev in evaluators if ev.name in results}
    paths.append(write_json(dict(checkpoint=checkpoint, config=config, results=summaries),
                            osp.join(out_dir, 'results.json')))
    data = report_data(evaluators, results)
    from ..visualization import plot_norm_histograms, plot_score_histogram
    if data['roc']:
        paths.append(plot_roc(data['roc'], osp.join(out_dir, 'roc.png'),
                              title='ROC of every target (verification: fold-averaged)'))
    for name, s in data['scores'].items():
        paths.append(plot_score_histogram(s['genuine'], s['impostor'], s['threshold'],
                                          osp.join(out_dir, f'scores_{file_stem(name)}.png'), title=name,
                                          xlabel=s['xlabel'], rule=s['rule'],
                                          threshold_range=s.get('threshold_range')))
    if data['norms']:
        paths.append(plot_norm_histograms(data['norms'], osp.join(out_dir, 'xnorm.png')))
    return paths
