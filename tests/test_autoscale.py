"""A search on an autoscaling GPU cluster, simulated for real: Ray's fake multinode provider launches GPU workers.

The cluster is shaped like cluster.yaml: a head with `CPU: 0` (no trial runs there) and GPU workers
`{CPU: 4, GPU: 1}` with `min_workers: 0`, so a search starts with no GPU in sight. The GPUs are fake (Ray
counts them, torch sees no CUDA), so trials train on CPU there; what is checked is where Ray put them.
"""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, run_cli, trial_results
from raycluster import FakeCluster
from tune_norm.clusterview import ClusterView, node_types_of

SMOKE = ROOT / "search_spaces" / "smoke.yaml"
GPU_WORKER = {"resources": {"CPU": 4, "GPU": 1, "object_store_memory": 100_000_000}, "max_workers": 2}


@pytest.fixture(scope="module")
def cluster():
    c = FakeCluster({"gpu_worker": GPU_WORKER}, idle_timeout_s=5).start()
    try:
        yield c
    finally:
        assert not c.stop(), "processes of the fake cluster survived teardown"


def _search(cluster: FakeCluster, storage: str, *args: str, timeout: float = 240):
    return run_cli("search", SMOKE, "--address", "auto", "--storage", storage, "--scheduler", "fifo",
                   "--max-concurrent", "4", *args, env=cluster.driver_env(), timeout=timeout)


@pytest.mark.slow
def test_gpu_search_scales_up_from_zero_packs_four_per_gpu_and_scales_down(cluster, tmp_path):
    (head,) = cluster.wait_for_nodes(1, timeout=60)  # only the head: no CPU, no GPU
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU", 0) == 0, head
    exp = tmp_path / "smoke"
    res = _search(cluster, f"file://{exp}", "--gpus-per-trial", "0.25", "--set", "subset=1000")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "4 trials, 0 errored" in res.stdout and "Connecting to existing Ray cluster" in res.stdout + res.stderr
    trials = trial_results(exp)
    assert len(trials) == 4 and all(len(rows) == 2 for rows in trials.values())
    rows = [r for rs in trials.values() for r in rs]
    assert {r["gpu_ids"] for r in rows} == {"0"}  # each got a share of GPU 0 ...
    workers = {r["node_id"] for r in rows}
    assert len(workers) == 1 and head["id"] not in workers  # ... of one worker: four trials packed on one GPU
    assert {r["device"] for r in rows} == {"cpu"}  # fake GPUs: torch sees no CUDA, device auto picks the CPU
    spans = [(rs[0]["wall_time"] - rs[0]["epoch_seconds"], rs[-1]["wall_time"]) for rs in trials.values()]
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans  # all four ran at the same time
    assert json.loads((exp / "tune_norm.json").read_text())["gpus_per_trial"] == 0.25
    # the worker came from the autoscaler and goes back once idle (idle_timeout 5 s)
    nodes = cluster.wait_for_nodes(1, timeout=60)
    assert [n["id"] for n in nodes] == [head["id"]], nodes


@pytest.mark.slow
def test_without_gpus_per_trial_the_fraction_comes_from_the_node_types(cluster, tmp_path):
    assert cluster.wait_for_nodes(1, timeout=60)[0]["resources"].get("GPU", 0) == 0  # no GPU up when it starts
    exp = tmp_path / "auto"
    res = _search(cluster, f"file://{exp}", "--num-samples", "2", "--set", "epochs=1", "--set", "subset=1000")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [r for rs in trial_results(exp).values() for r in rs]
    assert len(rows) == 2 and {r["gpu_ids"] for r in rows} == {"0"}, rows  # ran with a GPU share, not CPU-only
    assert json.loads((exp / "tune_norm.json").read_text())["gpus_per_trial"] == 0.25
    assert "the autoscaler can launch gpu_worker (GPU: 1), so each trial asks for 0.25 GPU" in res.stderr


@pytest.mark.slow
def test_a_local_storage_is_refused_before_any_trial(cluster, tmp_path):
    exp = tmp_path / "local"
    res = _search(cluster, str(exp), "--gpus-per-trial", "0.25", timeout=120)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    # the sentence is the last line of ours; the cluster's raylets may stream warnings (a full disk) around it
    last = [ln for ln in res.stderr.strip().splitlines() if "(raylet)" not in ln][-1]
    assert last.startswith(f"error: --storage {exp} is a folder on this machine, but the Ray cluster's autoscaler "
                           "can add nodes (gpu_worker)"), res.stderr
    assert res.stderr.count("error:") == 1 and "Traceback" not in res.stderr, res.stderr
    assert not exp.exists()  # nothing written, no trial started


# -- the decisions, from views of clusters that cannot be made here ---------------------------------
def test_node_types_of_an_autoscaler_config():
    import yaml

    shipped = node_types_of(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    assert shipped and all(r.get("GPU", 0) >= 1 for r in shipped.values()), shipped  # head left out
    assert node_types_of({"max_workers": 0, "available_node_types": {"w": {"resources": {"GPU": 1}}}}) == {}
    assert node_types_of({"max_workers": 2, "head_node_type": "h", "available_node_types": {
        "h": {"resources": {"CPU": 0}}, "cpu": {"resources": {"CPU": 8}, "max_workers": 0},
        "gpu": {"resources": {"CPU": 4, "GPU": 1}}}}) == {"gpu": {"CPU": 4.0, "GPU": 1.0}}


def test_gpu_share_and_storage_rules():
    gpu_cluster = ClusterView("10.0.0.1", ("10.0.0.1",), 0.0, {"gpu_worker": {"CPU": 4, "GPU": 1}})
    assert gpu_cluster.gpus_per_trial()[0] == 0.25
    assert ClusterView("10.0.0.1", ("10.0.0.1",), 0.0, {"cpu": {"CPU": 8}}).gpus_per_trial() == (0.0, "")
    assert ClusterView("10.0.0.1", ("10.0.0.1", "10.0.0.2"), 2.0, {}).gpus_per_trial() == (0.25, "")
    unknown = ClusterView("10.0.0.1", ("10.0.0.1",), 0.0, None)
    with pytest.raises(Exception, match="pass --gpus-per-trial"):
        unknown.gpus_per_trial()
    assert "cannot read the Ray cluster's autoscaler config" in unknown.storage_problem("/x")
    assert "nodes on other machines (10.0.0.2)" in ClusterView("10.0.0.1", ("10.0.0.1", "10.0.0.2"), 0, {}
                                                                ).storage_problem("/x")
    assert ClusterView("127.0.0.1", ("127.0.0.1", "127.0.0.1"), 0, {}).storage_problem("/x") is None
