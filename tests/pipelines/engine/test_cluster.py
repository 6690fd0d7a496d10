"""Running on a cluster: cluster.yaml against Ray's schema, and a diarize job submitted through the
Jobs API to a real two-node local cluster (token auth) that reads and writes the loopback S3."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import REPO, SAMPLE

pytestmark = pytest.mark.integration
RAY = str(Path(os.sys.executable).with_name("ray"))


def test_cluster_yaml_passes_rays_own_schema():
    from ray.autoscaler._private.util import validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(config)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {} and any(
        "--num-cpus=0" in c for c in config["head_start_ray_commands"]
    )
    assert any("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"])
    assert all(
        "RAY_AUTH_MODE=token" in c
        for c in config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]
    )
    gpu = config["available_node_types"]["gpu_worker"]
    assert (
        gpu["min_workers"] == 0
        and gpu["max_workers"] >= 1
        and gpu["node_config"]["InstanceType"].startswith("g6")
    )
    assert any("voxflow" in c for c in config["setup_commands"])


def test_kuberay_manifest_is_a_rayjob():
    docs = list(yaml.safe_load_all((REPO / "examples" / "kuberay-rayjob.yaml").read_text()))
    job = next(d for d in docs if d and d.get("kind") == "RayJob")
    assert job["apiVersion"].startswith("ray.io/")
    assert "voxflow" in job["spec"]["entrypoint"]
    groups = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert any("nvidia.com/gpu" in str(g) for g in groups)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_node_cluster(s3_server):
    """``ray start`` on 127.0.0.2 (head) and 127.0.0.3 (worker), token auth, dashboard on
    127.0.0.1; its own temp dir, so tearing it down touches no other Ray on the machine."""
    temp = Path(tempfile.mkdtemp(prefix="vxr", dir="/tmp"))
    token = temp / "token"
    token.write_text(secrets.token_hex(32))
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "PYTHONPATH": str(REPO),
        # Job entrypoints run `python`: the cluster's Python is this virtualenv's.
        "PATH": f"{Path(os.sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("RAY_ADDRESS", None)
    port, dash = _free_port(), _free_port()

    def own_ports() -> list[str]:
        # Every node's agents on free ports: the defaults (52365...) clash with any other Ray here.
        return [
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
        ]

    head = [
        RAY,
        "start",
        "--head",
        "--node-ip-address=127.0.0.2",
        f"--port={port}",
        "--num-cpus=1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--temp-dir={temp / 'r'}",
        "--disable-usage-stats",
        *own_ports(),
    ]
    worker = [
        RAY,
        "start",
        f"--address=127.0.0.2:{port}",
        "--node-ip-address=127.0.0.3",
        "--num-cpus=1",
        "--disable-usage-stats",
        *own_ports(),
    ]
    try:
        # No captured pipes: the daemons `ray start` leaves behind would inherit them.
        subprocess.run(
            head,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
        subprocess.run(
            worker,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
        yield f"http://127.0.0.1:{dash}", env
    finally:
        _kill_session(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _kill_session(temp: Path) -> None:
    """Stop this cluster's processes only (``ray stop`` would stop every Ray on the machine):
    the ones whose command line names its temp dir (raylet, GCS, workers), and all their
    descendants, found before anything is killed (agents rename themselves)."""
    import psutil

    marker = str(temp)
    for _ in range(3):
        roots = []
        for proc in psutil.process_iter():
            try:
                if any(marker in arg for arg in proc.cmdline()):
                    roots.append(proc)
            except psutil.Error:
                continue
        victims = {p.pid: p for p in roots}
        for root in roots:
            try:
                victims.update({c.pid: c for c in root.children(recursive=True)})
            except psutil.Error:
                continue
        if not victims:
            return
        for proc in victims.values():
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(list(victims.values()), timeout=5)


def _voxflow(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """voxflow in a fresh process, as a user runs it (the token is read from the environment)."""
    return subprocess.run(
        [os.sys.executable, "-m", "pipelines.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_diarize_job_on_a_two_node_cluster_reads_and_writes_s3(
    two_node_cluster, s3_server, tmp_path
):
    import s3fs

    address, env = two_node_cluster
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    fs.mkdir("cluster-bucket")
    for name in ("conv01_clean_3spk.flac", "conv04_mp3_2spk.mp3"):
        fs.put_file(str(SAMPLE / "audio" / name), f"cluster-bucket/in/{name}")
    config = tmp_path / "run.yaml"
    # Profiles on: the profile actor reads each speaker's turns back from S3 on whichever node
    # it landed.
    config.write_text(
        "diarization:\n  chunk: {seconds: 20.0, overlap: 2.0}\n  profile: {model: campplus}\n"
    )
    result = _voxflow(
        [
            "submit",
            "--address",
            address,
            "--wait",
            "--",
            "diarize",
            "s3://cluster-bucket/in",
            "--out",
            "s3://cluster-bucket/out",
            "--config",
            str(config),
            "-q",
        ],
        env,
    )
    printed = result.stdout
    assert result.returncode == 0, printed + result.stderr
    assert "SUCCEEDED" in printed and "2 files (2 ok, 0 errors)" in printed
    storage = {"client_kwargs": {"endpoint_url": s3_server}}
    files = pd.read_parquet("s3://cluster-bucket/out/files", storage_options=storage)
    segments = pd.read_parquet("s3://cluster-bucket/out/segments", storage_options=storage)
    assert sorted(files["status"]) == ["ok", "ok"] and files["path"].str.startswith("s3://").all()
    assert (
        set(segments["file_id"]) == set(files["file_id"])
        and segments["speaker_global"].notna().all()
    )
    centroids = pd.read_parquet(
        "s3://cluster-bucket/out/_shards/centroids", storage_options=storage
    )
    assert len(centroids) == 5  # 3 + 2 speakers
    assert all(len(p) == 192 and np.isfinite(p).all() for p in centroids["profile"])
    job_id = printed.rsplit("job ", 1)[1].split(":", 1)[0].strip()
    status = _voxflow(["jobs", "status", job_id, "--address", address], env)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
