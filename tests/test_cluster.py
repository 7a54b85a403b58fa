"""The experiment on a real distributed cluster: a `dask scheduler` and two `dask worker`
processes (separate OS processes, each with a memory limit) on 127.0.0.1, started here, bounded
in time and stopped in teardown. Same metrics as the threads scheduler."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from wydot_lab import config, experiment

import bsm_frames

DASK = str(Path(sys.executable).with_name("dask"))
KINDS = [{"name": "const_offset", "min_m": 100, "max_m": 200}, {"name": "data_replay"}, {"name": "position_swap"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _params(scheduler: str) -> config.Params:
    return config.from_dict(
        {
            "attacks": {"attacker_share": 0.3, "extra_shares": [], "seed": 3, "kinds": KINDS},
            "model": {"n_estimators": 10, "test_share": 0.3, "seed": 5, "detectors": ["rules", "random_forest"],
                      "min_test_attackers": 1},
            "dask": {"scheduler": scheduler, "npartitions": 3},
        }
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """tcp://127.0.0.1:<free port> of a scheduler and two workers (1 GiB each), all killed after."""
    port = _free_port()
    logs = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = []

    def start(*args: str, log: str) -> None:
        procs.append(
            subprocess.Popen(
                [DASK, *args],
                stdout=open(logs / log, "w"),
                stderr=subprocess.STDOUT,
                env=env,
                cwd=logs,
                start_new_session=True,
            )
        )

    address = f"tcp://127.0.0.1:{port}"
    try:
        start(
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            ":0",
            "--no-show",
            log="scheduler.log",
        )
        for i in range(2):
            start(
                "worker",
                address,
                "--host",
                "127.0.0.1",
                "--nworkers",
                "1",
                "--nthreads",
                "1",
                "--memory-limit",
                "1GiB",
                "--no-dashboard",
                "--name",
                f"w{i}",
                log=f"worker{i}.log",
            )
        from distributed import Client

        deadline = time.monotonic() + 90
        while True:
            try:
                with Client(address, timeout=5) as c:
                    c.wait_for_workers(2, timeout=max(1, deadline - time.monotonic()))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


@pytest.mark.timeout(300)
def test_experiment_on_a_scheduler_and_two_worker_processes_equals_threads(cluster, tmp_path):
    from distributed import Client

    corpus = bsm_frames.corridor(vehicles=20, msgs=24, seed=12, gap_every=8)
    with Client(cluster) as c:
        before = c.run(lambda dask_worker: (os.getpid(), dask_worker.state.transition_counter))
    remote = experiment.run(_params(cluster), tmp_path / "tcp", table=corpus)
    with Client(cluster) as c:
        after = c.run(lambda dask_worker: (os.getpid(), dask_worker.state.transition_counter))
    assert len(after) == 2 and all(pid != os.getpid() for pid, _ in after.values())
    assert all(after[w][1] > before[w][1] for w in after)  # both worker processes did tasks
    local = experiment.run(_params("threads"), tmp_path / "threads", table=corpus)
    pd.testing.assert_frame_equal(remote, local)
    m_tcp, m_threads = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("tcp", "threads"))
    for m in (m_tcp, m_threads):
        m.pop("params")
    assert m_tcp == m_threads


@pytest.mark.timeout(300)
def test_local_cluster_starts_worker_processes(tmp_path, monkeypatch):
    """`dask.scheduler: local-cluster` runs the tasks in n_workers separate processes."""
    p = _params("local-cluster").model_copy(
        update={"dask": config.DaskParams(scheduler="local-cluster", npartitions=3, n_workers=2, memory_limit="1GiB")}
    )
    with experiment._scheduler(p.dask) as client:
        info = client.scheduler_info()["workers"]
        assert len(info) == 2 and all(w["memory_limit"] == 2**30 for w in info.values())
        seen = client.run(os.getpid)
    assert len(set(seen.values())) == 2 and os.getpid() not in seen.values()
    corpus = bsm_frames.corridor(vehicles=20, msgs=24, seed=12, gap_every=8)
    a = experiment.run(p, tmp_path / "lc", table=corpus)
    b = experiment.run(_params("synchronous"), tmp_path / "sync", table=corpus)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.timeout(500)
def test_notebook_03_through_papermill_on_the_cluster_equals_threads(cluster, tmp_path):
    import yaml
    from distributed import Client

    from wydot_lab import pipeline

    root = Path(__file__).resolve().parent.parent
    stages = tuple(pipeline.stage(n) for n in ("01_explore", "03_featurize"))
    feats, done = {}, {}
    for name, scheduler in (("tcp", cluster), ("threads", "threads")):
        data = yaml.safe_load((root / "params" / "tiny.yaml").read_text())
        data["cache"]["root"] = str(tmp_path / "cache")
        data["outputs"]["dir"] = str(tmp_path / "outputs")
        data["dask"] = {"scheduler": scheduler, "npartitions": 2}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        with Client(cluster) as c:
            before = sum(t for _, t in c.run(lambda dask_worker: (0, dask_worker.state.transition_counter)).values())
        assert pipeline.run(path, out=tmp_path / name, progress=lambda _: None, stages=stages)["status"] == "ok"
        with Client(cluster) as c:
            done[name] = (
                sum(t for _, t in c.run(lambda dask_worker: (0, dask_worker.state.transition_counter)).values())
                - before
            )
        feats[name] = pd.read_parquet(tmp_path / name / "03_featurize" / "features.parquet")
    assert done["tcp"] > 0 and done["threads"] == 0  # the workers featurized for the tcp run only
    pd.testing.assert_frame_equal(feats["tcp"], feats["threads"])
