"""Skips for components CI must have: the reason starts with 'REQUIRED:' so tools/run_tests.py fails the run.

A test that needs the msrun launcher, onnx or onnxruntime skips (rather than errors) when the
component is missing, so a developer without it can still run the rest; but in CI a missing
component would silently drop those tests, so the closing line of tools/run_tests.py counts a
'REQUIRED:' skip as a failure and names it.
"""
import importlib
import os.path as osp
import sys

import pytest

PREFIX = 'REQUIRED:'


def msrun_path():
    """The msrun launcher next to this interpreter; skips with a REQUIRED: reason when it is missing."""
    path = osp.join(osp.dirname(sys.executable), 'msrun')
    if not osp.exists(path):
        pytest.skip(f'{PREFIX} msrun launcher not found next to {sys.executable}')
    return path


def require_module(name):
    """Import ``name`` (e.g. 'onnx', 'onnxruntime'); skips with a REQUIRED: reason when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        pytest.skip(f'{PREFIX} python module {name} is not installed ({e})', allow_module_level=True)
