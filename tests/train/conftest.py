"""The storage server fixtures for the tests that run a workdir on a bucket (tests/train/storage_server.py).

One server per test process (pytest session, i.e. per xdist worker), shared by every module that uses
it: the storage clients cache their connection settings per process (etils.epath keeps one gcsfs
filesystem per scheme, built from STORAGE_EMULATOR_HOST when first used), so a second server on another
port in the same process would be met by the first one's cached client. Modules keep apart by writing
under their own prefix in the bucket.
"""

import pytest

from tests.train.storage_server import GcsServer


@pytest.fixture(scope="session")
def gcs_server():
    """fake-gcs-server on loopback, with a fault-injecting proxy, started once per test process; its
    bucket is "bucket". Use it through `gcs`, which points the clients at it."""
    with GcsServer() as server:
        yield server


@pytest.fixture(scope="module")
def gcs(gcs_server):
    """The process's storage server (`gcs_server`) for one test module: os.environ (and gcsfs's
    defaults) point every storage client at it meanwhile, and no fault is set at entry or exit."""
    gcs_server.proxy.clear()
    with gcs_server.environment():
        yield gcs_server
    gcs_server.proxy.clear()
