"""Shared fixtures: one local Ray and a loopback S3 server (helpers are in ``helpers.py``)."""

from __future__ import annotations

import os
import socket

import pytest

# A forgotten model-hub call fails at once instead of after retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from helpers import REPO


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on loopback, with s3fs pointed at it through the environment
    (``FSSPEC_S3_ENDPOINT_URL``: the same setting a user gives s3fs for any S3-compatible store).

    Not ``AWS_ENDPOINT_URL``: measured here, with it in the environment of ``ray start`` the
    node's job agent never registers ("No available agent to submit job").
    """
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FSSPEC_S3_ENDPOINT_URL": endpoint,
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # fsspec reads FSSPEC_* variables when it is first imported, which an earlier test may have
    # done: load them again (a user sets them before voxflow starts).
    import fsspec.config

    fsspec.config.set_conf_env(fsspec.config.conf)
    yield endpoint
    server.stop()
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One local Ray for all integration tests: 2 CPUs, like the machines voxflow is tested on.

    Started after the S3 server so its workers inherit the endpoint settings; shut down at the
    end so no Ray process outlives the tests.
    """
    import ray

    # Workers import test-defined operators by module name: put tests/ and its folders on
    # their path.
    folders = sorted(
        p for p in (REPO / "tests").rglob("*") if p.is_dir() and p.name != "__pycache__"
    )
    paths = [str(REPO / "tests"), *map(str, folders), str(REPO)] + [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p
    ]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    # address="local": always a new Ray of our own, never one that another process started here.
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    """A test that uses the local Ray is an integration test whether or not it says so, so
    ``make test-fast`` (``-m 'not integration'``) never starts Ray."""
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
