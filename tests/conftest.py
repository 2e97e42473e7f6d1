"""Shared test setup: no display, few threads, and never the user's real cache folder."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import torch

# One thread: the test models are tiny, and on a shared busy CPU a second OpenMP thread
# made small convolutions 10-40x slower (measured). KILN_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("KILN_TEST_THREADS", "1")))


@pytest.fixture(autouse=True, scope="session")
def _private_cache_home(tmp_path_factory):
    """Point $XDG_CACHE_HOME (the default result cache) at a temp folder for every test."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old
