"""The storage server fixtures for the tests that run a workdir on a bucket (tests/train/storage_server.py).

One server per test process (pytest session, i.e. per xdist worker), shared by every module that uses
it, each module writing under its own prefix in the bucket: every storage client in the process (gcsfs,
which etils.epath keeps one of per process together with its connection pool, TensorStore, and
google-cloud-storage) then talks to one endpoint for the life of the process. A server per module, started
and stopped in turn in one worker, once hung that worker (issue 27).
"""

import pytest

from tests.train.storage_server import GcsServer, S3Server, environ


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


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on loopback, started once per test process (botocore clients, like gcsfs, are kept
    per process by etils.epath); its bucket is "bucket". Skipped where moto or s3fs is not installed."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    with S3Server() as server:
        yield server


@pytest.fixture(scope="module")
def s3(s3_server):
    """The process's S3 server (`s3_server`) for one test module: os.environ points s3fs at it meanwhile."""
    with environ(s3_server.env):
        yield s3_server
