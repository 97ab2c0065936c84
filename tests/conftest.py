"Fixtures the test modules share"
import os
import pytest
from mixcut_nb.data import digits_folder

@pytest.fixture(scope='session')
def digits(tmp_path_factory):
    "The digits data set, written once into a fresh MIXCUT_NB_CACHE that training subprocesses inherit"
    old = os.environ.get('MIXCUT_NB_CACHE')
    os.environ['MIXCUT_NB_CACHE'] = str(tmp_path_factory.mktemp('cache'))
    yield digits_folder()
    if old is None: del os.environ['MIXCUT_NB_CACHE']
    else: os.environ['MIXCUT_NB_CACHE'] = old
