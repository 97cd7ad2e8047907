"""A search on s3:// against a real S3 API (moto's server on localhost): kill -9 the driver, resume, report.

Everything goes through the URI (`s3://bucket/key?endpoint_override=127.0.0.1:PORT&scheme=http`, fake
credentials in the environment), as on a cluster whose nodes share nothing but the bucket. The test reads the
bucket with boto3, not with tune-norm's own reader.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass

import pytest

from conftest import CLI, DATA, ROOT, run_cli, wait_for, write_space
from raycluster import free_port

pytestmark = pytest.mark.slow
BUCKET = "tune-norm-test"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}


@dataclass
class Bucket:
    client: object
    port: int

    def uri(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}?endpoint_override=127.0.0.1:{self.port}&scheme=http"

    def sizes(self, prefix: str) -> dict[str, int]:
        out = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
            out.update({o["Key"][len(prefix) + 1:]: o["Size"] for o in page.get("Contents", [])})
        return out

    def read(self, key: str) -> str:
        return self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()

    def results(self, prefix: str) -> dict[str, list[dict]]:
        """Top-level trial folder -> its result.json rows (orphaned/ left out)."""
        keys = [k for k in self.sizes(prefix) if k.startswith("trial_") and k.endswith("/result.json")]
        return {k.split("/")[0]: [json.loads(line) for line in self.read(f"{prefix}/{k}").splitlines() if line.strip()]
                for k in keys if k.count("/") == 1}


@pytest.fixture(scope="module")
def bucket():
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=BUCKET)
        yield Bucket(client, port)
    finally:
        server.stop()


def _wait_until_quiet(bucket: Bucket, prefix: str, quiet_s: float = 3.0, timeout: float = 60.0) -> None:
    """Ray's workers outlive their killed driver for a moment and may still upload."""
    deadline, last, since = time.time() + timeout, bucket.sizes(prefix), time.time()
    while time.time() < deadline and time.time() - since < quiet_s:
        time.sleep(0.5)
        now = bucket.sizes(prefix)
        if now != last:
            last, since = now, time.time()


def test_search_kill_resume_and_report_on_s3(bucket, tmp_path):
    space = write_space(tmp_path / "s3.yaml", num_samples=4, search={"type": "optuna", "max_concurrent": 2, "seed": 3},
                        scheduler={"type": "fifo"}, num_to_keep=1, space={"epochs": 2})
    prefix = "runs/resume"
    uri = bucket.uri(prefix)
    env = {**os.environ, **CREDENTIALS, "TUNE_NORM_DATA": str(DATA)}
    proc = subprocess.Popen([*CLI, "search", str(space), "--storage", uri, "--num-cpus", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True, cwd=tmp_path)
    finished = lambda: sum(len(r) == 2 for r in bucket.results(prefix).values())  # noqa: E731
    state = lambda: any(k.startswith("experiment_state-") for k in bucket.sizes(prefix))  # noqa: E731
    try:
        wait_for(lambda: finished() >= 1 and state(), 240, proc)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # kill -9 the driver (and the local Ray it started)
        except ProcessLookupError:
            pass
        proc.wait()
    _wait_until_quiet(bucket, prefix)
    assert not (tmp_path / "tune_results").exists()  # nothing went to a local folder
    # a trial that started after Ray's last snapshot: the resume must set it aside, in the bucket
    bucket.client.put_object(Bucket=BUCKET, Key=f"{prefix}/trial_0rphan/result.json",
                             Body=json.dumps({"epoch": 1, "val_acc": 50.0, "timestamp": 1}) + "\n")
    before = {name: rows for name, rows in bucket.results(prefix).items() if len(rows) == 2}
    assert before and len(bucket.results(prefix)) - 1 < 4 or any(len(r) < 2 for r in bucket.results(prefix).values())

    res = run_cli("search", space, "--storage", uri, "--num-cpus", "2", "--resume", env=CREDENTIALS, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "trial_0rphan started after Ray's last snapshot" in res.stderr, res.stderr[-3000:]
    keys = bucket.sizes(prefix)
    assert "orphaned/trial_0rphan/result.json" in keys and not any(k.startswith("trial_0rphan/") for k in keys)
    after = bucket.results(prefix)
    epochs = {name: [r["epoch"] for r in rows] for name, rows in after.items()}
    for name, rows in before.items():  # finished trials were not rerun
        assert [r["timestamp"] for r in after[name]] == [r["timestamp"] for r in rows]
    for name, numbers in epochs.items():  # no trial restarted from epoch 1 after the resume
        assert numbers == sorted(set(numbers)), (name, numbers)
    assert all(sum(k.startswith(f"{n}/checkpoint_") and k.endswith("state.pt") for k in keys) == 1 for n in after)

    # the report reads the bucket directly: results, Ray's state, our provenance and the checkpoints (plots)
    out = tmp_path / "report"
    rep = run_cli("report", uri, "--out", out, env=CREDENTIALS, cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert f"Folder: {uri}" in rep.stdout and " of 4 planned" in rep.stdout, rep.stdout
    assert "set aside in orphaned/" in rep.stdout and "trial_0rphan" in rep.stdout
    assert (out / "report.html").exists() and list(out.glob("misclassified_*.png"))  # weights read from s3://
    assert not (tmp_path / "reports").exists()
    # the planned 4 trials, each at its last epoch: a kill during Ray's upload leaves its snapshot's files from
    # different moments (tests/test_reliability_search.py makes each case by hand), and the resume mends them
    assert len(after) == 4 and all(numbers == [1, 2] for numbers in epochs.values()), (epochs, res.stderr[-3000:])
    assert "Trials: 4 of 4 planned (4 terminated)" in rep.stdout, rep.stdout


def test_s3_storage_without_a_bucket_or_with_a_secret_in_the_uri_is_refused(bucket, tmp_path):
    secret = bucket.uri("runs/x") + "&secret_key=abc"
    res = run_cli("search", ROOT / "search_spaces" / "smoke.yaml", "--storage", secret, env=CREDENTIALS)
    assert res.returncode == 2 and "keep credentials out of it" in res.stderr, res.stderr[-2000:]
    assert "abc" not in res.stderr
    missing = bucket.uri("runs/none").replace(BUCKET, "no-such-bucket")
    rep = run_cli("report", missing, env=CREDENTIALS, cwd=tmp_path)
    assert rep.returncode == 2 and "does not exist" in rep.stderr and "Traceback" not in rep.stderr, rep.stderr
    res = run_cli("search", ROOT / "search_spaces" / "smoke.yaml", "--storage", missing, env=CREDENTIALS,
                  cwd=tmp_path)  # refused before Ray starts: no "Started a local Ray instance"
    assert res.returncode == 2 and f"error: cannot create {missing}" in res.stderr, res.stderr[-2000:]
    assert "Ray" not in res.stderr and "Traceback" not in res.stderr
