"""The real-Xen suite's host side (integration/conftest.py) ends a test bed that goes silent or runs past
its deadline: CI's own limit once passed while a silent QEMU kept the console reader waiting. Checked with
a shell standing in for QEMU."""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

HOST = Path(__file__).resolve().parents[1] / "integration/conftest.py"


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("xenddd_integration_host", HOST)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "SILENCE", 1.0)
    return module


def qemu(script: str) -> list[str]:
    """A stand-in for QEMU; its scripts `exec` their last command, so that what run_qemu kills is what
    holds the console, as QEMU does."""
    return ["sh", "-c", script]


def run(host: ModuleType, script: str, tmp_path: Path, monitor: Path | None = None) -> tuple[object, float]:
    disks = tuple(tmp_path / name for name in ("a.img", "b.img", "c.img"))
    started = time.monotonic()
    result = host.run_qemu(qemu(script), tmp_path, disks, monitor)
    return result, time.monotonic() - started


def test_a_silent_test_bed_is_killed_as_hung(host: ModuleType, tmp_path: Path) -> None:
    result, took = run(host, "echo 'XENDDD-IT: runner start'; exec sleep 60", tmp_path)
    assert result.hung and not result.timed_out  # type: ignore[attr-defined]
    assert took < 30
    assert result.markers and "runner start" in result.markers[0]  # type: ignore[attr-defined]
    assert "QEMU killed" in (tmp_path / "serial.log").read_text()


def test_a_chatty_test_bed_is_killed_at_its_deadline(
    host: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host, "BOOT_TIMEOUT", 2.0)
    result, took = run(host, "while :; do echo tick; sleep 0.2; done", tmp_path)
    assert result.timed_out and not result.hung  # type: ignore[attr-defined]
    assert took < 30


def test_the_suite_deadline_bounds_a_boot_too(
    host: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host, "SUITE_DEADLINE", time.time() + 2.0)
    result, took = run(host, "while :; do echo tick; sleep 0.2; done", tmp_path)
    assert result.timed_out  # type: ignore[attr-defined]
    assert took < 30


def test_a_test_bed_that_ends_is_read_to_its_last_line(host: ModuleType, tmp_path: Path) -> None:
    result, _ = run(host, "sleep 0.5; echo 'XENDDD-IT: DONE rc=0 uptime=1'", tmp_path)
    assert not (result.hung or result.timed_out or result.dom0_crashed)  # type: ignore[attr-defined]
    assert result.returncode == "0"  # type: ignore[attr-defined]


def test_a_dom0_crash_ends_the_boot_at_once(host: ModuleType, tmp_path: Path) -> None:
    result, took = run(host, "echo '(XEN) Hardware Dom0 crashed'; exec sleep 60", tmp_path)
    assert result.dom0_crashed and not result.hung  # type: ignore[attr-defined]
    assert took < 30


def booted_with(host: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *firsts: object) -> object:
    """boot_alone with run_qemu answering `firsts`, then a good run: the run it returns, and how many
    boots it made."""
    monkeypatch.setattr(host, "RESULTS", tmp_path)
    answers = [*firsts, host.XenRun(returncode="0")]
    boots: list[int] = []

    def run_qemu(qemu: list[str], results: Path, disks: tuple[Path, ...], monitor: Path) -> object:
        for disk in disks:
            disk.write_bytes(b"")
        (results / "serial.log").write_text(f"boot {len(boots)}\n")
        boots.append(1)
        return answers[len(boots) - 1]

    monkeypatch.setattr(host, "run_qemu", run_qemu)
    run = host.boot_alone(tmp_path / "images", host.MACHINES["pc"], "trixie", "")
    run.boots = len(boots)
    return run


def test_a_hung_test_bed_is_booted_once_more_and_its_serial_log_kept(
    host: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hung = host.XenRun(returncode=None, hung=True, markers=["XENDDD-IT: scenario test_x"])
    run = booted_with(host, tmp_path, monkeypatch, hung)
    assert run.boots == 2 and run.first_boot == "hung" and run.returncode == "0"  # type: ignore[attr-defined]
    assert (tmp_path / "pc-trixie/serial-dom0-hung.log").read_text() == "boot 0\n"


def test_a_dom0_that_crashed_during_a_scenario_is_not_booted_again(
    host: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed = host.XenRun(returncode=None, dom0_crashed=True, markers=["XENDDD-IT: scenario test_x"])
    run = booted_with(host, tmp_path, monkeypatch, crashed)
    assert run.boots == 1 and run.dom0_crashed  # type: ignore[attr-defined]


def fake_monitor(path: Path) -> threading.Thread:
    """A QMP server that answers as QEMU's does: a greeting, then a return for each command."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        connection, _ = server.accept()
        with connection, server, connection.makefile("rw") as stream:
            stream.write('{"QMP": {"version": {}}}\n')
            stream.flush()
            for line in stream:
                request = json.loads(line)
                if request["execute"] == "qmp_capabilities":
                    stream.write('{"return": {}}\n')
                else:
                    stream.write('{"event": "RTC_CHANGE"}\n')  # an event may come before the answer
                    command = request["arguments"]["command-line"]
                    stream.write(json.dumps({"return": f"answer to {command}: RIP=ffff82d040212345"}) + "\n")
                stream.flush()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_a_silent_test_bed_is_asked_where_its_vcpus_stand(host: ModuleType, tmp_path: Path) -> None:
    monitor = Path(tempfile.mkdtemp()) / "qmp.sock"
    fake_monitor(monitor)
    result, _ = run(host, "exec sleep 60", tmp_path, monitor)
    assert result.hung  # type: ignore[attr-defined]
    said = (tmp_path / "hung-cpus.txt").read_text()
    assert "(qemu) info registers -a\nanswer to info registers -a: RIP=ffff82d040212345" in said


def test_a_monitor_that_does_not_answer_says_qemu_itself_is_stuck(host: ModuleType, tmp_path: Path) -> None:
    result, _ = run(host, "exec sleep 60", tmp_path, tmp_path / "no-such.sock")
    assert result.hung  # type: ignore[attr-defined]
    assert "QEMU itself is stuck" in (tmp_path / "hung-cpus.txt").read_text()
