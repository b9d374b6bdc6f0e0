"""The one matplotlib set-up: the Agg backend (files only, no display) and how a figure is saved."""
import os
import os.path as osp

__all__ = ['pyplot', 'save_figure']


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (set before pyplot is first imported in this process)."""
    import matplotlib
    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path, dpi=100):
    """Save ``fig`` as ``path`` (folders created), close it, return the path as str."""
    path = str(path)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
