"""Detection on a Dask cluster (``edgedl[dask]``): the same records as a local run, a bad file
reported and skipped there too, a worker killed mid-run loses no result."""
import os
import shutil
import signal

import importlib.util

import pytest

from edgedl import batch, cli

distributed = pytest.importorskip("distributed", reason="edgedl[dask] is not installed")
pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnx") is None,
                                reason="the onnx package is not installed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None, silence_logs=50) as c, \
            distributed.Client(c) as client:
        yield c, client


@pytest.fixture(scope="module")
def folder(tmp_path_factory, shared_dir):
    """~40 files: the shared images duplicated, and one that is no image."""
    d = tmp_path_factory.mktemp("many")
    names = sorted(p.name for p in (shared_dir / "images").iterdir()
                   if p.suffix in (".png", ".jpg"))
    for k in range(40):
        shutil.copy(shared_dir / "images" / names[k % len(names)], d / f"{k:02d}_{names[k % 4]}")
    (d / "17_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return d


def _strip(records):
    """Records without their timings (which differ run to run)."""
    return [{k: v for k, v in r.items() if k != "time_ms"} for r in records]


def test_distributed_equals_local_and_skips_bad_file(cluster, folder, tmp_path):
    _, client = cluster
    local = batch.detect_many([folder], cli.DEMO_MODEL)
    remote = batch.detect_many([folder], cli.DEMO_MODEL, client=client, out=tmp_path,
                               txt=True, coco=True)
    assert len(remote) == 41 and _strip(remote) == _strip(local)
    bad = [r for r in remote if "error" in r]
    assert bad == [{"source": str(folder / "17_broken.jpg"), "error": bad[0]["error"]}]
    assert "17_broken.jpg" in bad[0]["error"]
    assert sum(len(r["detections"]) for r in remote if "detections" in r) > 40
    # the client wrote the files of a local run
    assert len(list((tmp_path / "labels").iterdir())) == 40
    assert (tmp_path / "predictions.json").exists()
    # one detector per worker process (not per task): built once, then cached
    sizes = client.run(lambda: len(batch._DETECTORS))
    assert sorted(sizes.values()) == [1, 1]


def test_killed_worker_loses_no_result(cluster, folder):
    c, client = cluster
    pids = client.run(os.getpid)
    killed = []

    def kill_one(rec):
        if not killed:                     # mid-run: after the first result came back
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
    recs = batch.detect_many([folder], cli.DEMO_MODEL, client=client, on_record=kill_one)
    assert killed and len(recs) == 41
    assert [r["source"] for r in recs] == sorted(str(p) for p in folder.iterdir())
    assert sum("error" in r for r in recs) == 1
    client.wait_for_workers(2, timeout=60)       # the nanny restarted it


def test_cli_dask(capsys, cluster, folder):
    c, _ = cluster
    rc = cli.main(["detect", str(folder / "00_astronaut.png"), str(folder / "17_broken.jpg"),
                   "--json", "--dask", c.scheduler_address])
    out, err = capsys.readouterr()
    assert rc == 1
    lines = out.splitlines()
    assert len(lines) == 2 and '"person"' in lines[0] and '"error"' in lines[1]


def test_cli_dask_fail_fast(capsys, cluster, folder):
    c, _ = cluster
    rc = cli.main(["detect", str(folder / "17_broken.jpg"), str(folder / "00_astronaut.png"),
                   "--json", "--dask", c.scheduler_address, "--fail-fast"])
    out, err = capsys.readouterr()
    assert rc == 1 and len(out.splitlines()) == 1 and '"error"' in out
