"""The `cleanaudit` command line as a process owner uses it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

MIWG = sorted((ROOT / "tests" / "data" / "miwg").glob("*.bpmn"))
FIXTURES = ROOT / "tests" / "data" / "engine" / "processes"
PROBLEM_LINE = re.compile(r"^[^:]+:(\d+|\?): \S+: .+")


def cleanaudit(*args, env=None):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


@pytest.mark.parametrize("path", MIWG, ids=[p.name for p in MIWG])
def test_validate_answers_every_miwg_reference_model_with_0_or_1_and_clear_messages(path):
    result = cleanaudit("validate", str(path))
    assert result.returncode in (0, 1)
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode == 1:
        assert lines, "a refusal must say why"
    for line in lines:
        assert PROBLEM_LINE.match(line), line


def test_validate_exits_0_for_a_deployable_file_and_1_for_hostile_bytes(tmp_path):
    assert cleanaudit("validate", str(FIXTURES / "approval.bpmn"),
                      "--forms", str(ROOT / "tests" / "data" / "engine" / "forms")).returncode == 0
    bomb = tmp_path / "bomb.bpmn"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>')
    binary = tmp_path / "binary.bpmn"
    binary.write_bytes(bytes(range(256)) * 10)
    empty = tmp_path / "empty.bpmn"
    empty.write_bytes(b"")
    for path in (bomb, binary, empty, tmp_path / "missing.bpmn"):
        result = cleanaudit("validate", str(path))
        assert result.returncode == 1, path
        assert result.stdout.startswith(str(path.name) if path.name != "missing.bpmn" else str(path))
        assert "Traceback" not in result.stdout + result.stderr


def test_validate_without_files_exits_1_not_2():
    assert cleanaudit("validate").returncode == 1


def test_deploy_then_deploy_again_reports_the_same_version(tmp_path):
    import os
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp_path / 'cli.sqlite'}")
    first = cleanaudit("deploy", str(FIXTURES / "loop.bpmn"), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "loop: version 1" in first.stdout
    again = cleanaudit("deploy", str(FIXTURES / "loop.bpmn"), env=env)
    assert "loop: version 1" in again.stdout
    hostile = tmp_path / "loop.bpmn"
    hostile.write_bytes((FIXTURES / "loop.bpmn").read_bytes().replace(b"counter + 1", b"open('/etc/passwd')"))
    refused = cleanaudit("deploy", str(hostile), env=env)
    assert refused.returncode == 1 and "open" in refused.stdout


def test_tick_in_a_fresh_process_fires_the_art10_deadlines_that_are_due(tmp_path):
    """`cleanaudit tick` (what the worker runs every minute) as the first thing a process does."""
    import os
    from datetime import datetime
    from tests.conftest import SHANGHAI, add_organisation, make_engine
    from engine import clock
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    engine = make_engine(url, FIXTURES, ROOT / "tests" / "data" / "engine" / "forms")
    engine.deploy_paths([FIXTURES / "deadline.bpmn"], deployed_by="owner")
    org = add_organisation(engine, kind="enterprise", name="甲", credit_code="91350100M000100Y43",
                           division_code="650102")
    with clock.use_clock(datetime(2025, 2, 1, 9, 0, tzinfo=SHANGHAI)):
        ids = [engine.start("deadline", actor="x", data={"enterprise_id": org, "jurisdiction_code": "650102",
                                                         "published_on": "2025-01-31"}) for _ in range(3)]
    engine.db.dispose()
    env = dict(os.environ, DATABASE_URL=url)
    early = cleanaudit("tick", "--now", "2025-02-28", env=env)
    assert early.returncode == 0 and early.stdout == "", early.stdout + early.stderr
    result = cleanaudit("tick", "--now", "2025-03-05", "--timer-processes", "1", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(result.stdout.splitlines()) == sorted(
        f"instance {i}: fired report_late -> running" for i in ids)
    assert "3 instance(s) ticked" in result.stderr


def _children(pid: int) -> set:
    found = set()
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(status.parent.name))
    return found


def _alive(pids: set) -> set:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()
            and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"}


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_the_worker_leaves_no_timer_helper_processes_behind_when_it_is_stopped(tmp_path, stop):
    """`cleanaudit worker` runs helper processes for large timer sweeps; stopped as `serve` stops it
    (SIGTERM) or killed outright (SIGKILL), none of them is left running."""
    import os
    import signal
    import time
    from tests.conftest import make_engine
    url = f"sqlite:///{tmp_path / 'worker.sqlite'}"
    make_engine(url).db.dispose()
    worker = subprocess.Popen([sys.executable, "-m", "engine.cli", "worker", "--interval", "60",
                               "--timer-processes", "2"], cwd=ROOT, env=dict(os.environ, DATABASE_URL=url),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert "2 processes fire large sweeps" in worker.stderr.readline()
        helpers = _children(worker.pid)
        assert len(helpers) >= 2
        worker.send_signal(getattr(signal, stop))
        worker.wait(20)
        deadline = time.monotonic() + 10
        while _alive(helpers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive(helpers) == set()
    finally:
        if worker.poll() is None:
            worker.kill()
