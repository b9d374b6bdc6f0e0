import mindspore as ms
import pytest


@pytest.fixture(autouse=True)
def pynative_mode():
    """Model tests run eagerly unless they ask for graph mode; other suites may have left graph mode set."""
    old = ms.get_context('mode')
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=old)
