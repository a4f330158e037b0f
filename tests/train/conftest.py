"""The storage server fixture for the tests that run a workdir on a bucket (tests/train/storage_server.py)."""

import pytest

from tests.train.storage_server import GcsServer


@pytest.fixture(scope="module")
def gcs():
    """fake-gcs-server on loopback, with a fault-injecting proxy, for one test module; os.environ (and
    gcsfs's defaults) point every storage client at it meanwhile. Its bucket is "bucket"."""
    with GcsServer() as server, server.environment():
        yield server
