"""Resource sampling: figures of a busy, memory-holding subprocess against psutil's own, the sampler
that stops by itself when the process it watches exits, the log read back, and a job's samples."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest

from core import charts
from core.runtime.jobs import JobRegistry
from core.serving.resources import (
    RESOURCE_COLUMNS,
    ResourceSampler,
    TreeSampler,
    default_resource_path,
    read_resource_log,
)

# holds ~200 MiB and spins one core until killed
BUSY = "import time\nblock = bytearray(200 * 2**20)\nblock[::4096] = b'x' * len(block[::4096])\nwhile True: pass\n"


@pytest.fixture
def busy():
    proc = subprocess.Popen([sys.executable, "-c", BUSY])
    deadline = time.monotonic() + 10
    while psutil.Process(proc.pid).memory_info().rss < 180 * 2**20 and time.monotonic() < deadline:
        time.sleep(0.05)
    yield proc
    proc.kill()
    proc.wait()


def test_tree_sample_matches_psutil(busy):
    tree = TreeSampler(busy.pid)
    time.sleep(0.5)
    cpu, rss_mb, processes = tree.sample()
    own = psutil.Process(busy.pid).memory_info().rss / 2**20
    assert processes == 1
    assert rss_mb == pytest.approx(own, rel=0.05) and rss_mb > 180
    assert 20 < cpu <= 100 * psutil.cpu_count() + 5        # one spinning core (the machine is shared)


def test_sampler_stops_when_the_watched_process_exits(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"])
    path = tmp_path / "logs" / "resources.log"
    sampler = ResourceSampler(path, "job:test", pid=proc.pid, interval=0.1).start()
    proc.wait()
    sampler.join(timeout=5)
    assert not sampler.running
    frame = read_resource_log(path)
    assert list(frame.columns) == list(RESOURCE_COLUMNS)
    assert len(frame) == sampler.lines >= 3
    assert set(frame["source"]) == {"job:test"} and set(frame["pid"]) == {proc.pid}
    assert frame["time"].is_monotonic_increasing and (frame["rss_mb"] > 0).all()


def test_stop_and_log_reading(tmp_path):
    path = default_resource_path(tmp_path / "db.duckdb")
    assert path == (tmp_path / "logs" / "resources.log").resolve()
    assert read_resource_log(path).empty
    with ResourceSampler(path, "app", interval=0.05) as sampler:
        time.sleep(0.4)
    assert not sampler.running and sampler.lines >= 2
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("not json\n" + json.dumps({"time": "bad", "source": "x"}) + "\n")
    frame = read_resource_log(path)
    assert len(frame) == sampler.lines and str(frame["time"].dtype) == "datetime64[ns]"
    fig = charts.resource_usage(frame, "rss_mb")
    assert [t.name for t in fig.data] == ["app"] and list(fig.data[0].y) == frame["rss_mb"].tolist()
    with pytest.raises(ValueError):
        ResourceSampler(path, "app", interval=0)


def test_a_job_samples_while_it_runs(tmp_path):
    registry = JobRegistry(resource_log=tmp_path / "resources.log", resource_interval=0.05)
    job = registry.submit("train", lambda ctx: time.sleep(0.5))
    assert registry.wait(job, timeout=10).status == "done"
    registry.shutdown()
    frame = read_resource_log(tmp_path / "resources.log")
    assert len(frame) >= 3 and set(frame["source"]) == {"job:train"}
