"""The control socket never lets a bad, big, slow or unauthorised client block or crash the daemon."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xenddd.errors import DaemonNotRunning
from xenddd.service import control
from xenddd.service.control import MAX_CONNECTIONS, MAX_REQUEST, ControlServer, request


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ControlServer]:
    calls: list[str] = []

    def handler(op: str, args: dict[str, Any]) -> dict[str, Any]:
        calls.append(op)
        if op == "boom":
            raise RuntimeError("bug")
        return {"ok": True, "op": op, "args": args}

    control = ControlServer(tmp_path / "control.sock", handler)
    control.start()
    yield control
    control.stop()


def raw(path: Path, payload: bytes, shutdown: bool = True) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(payload)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return json.loads(data)  # type: ignore[no-any-return]


def test_the_socket_is_private_to_root(server: ControlServer) -> None:
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600


def test_a_request_gets_a_versioned_answer(server: ControlServer) -> None:
    answer = request(server.path, "status", {"x": 1})
    assert answer == {"version": 1, "ok": True, "op": "status", "args": {"x": 1}}


def test_garbage_oversized_and_wrong_version_requests_get_errors(server: ControlServer) -> None:
    assert raw(server.path, b"not json\n")["error"] == "request is not JSON"
    assert "protocol version" in raw(server.path, b'{"version": 9, "op": "status"}\n')["error"]
    assert "larger than" in raw(server.path, b"x" * (MAX_REQUEST + 10), shutdown=False)["error"]
    answer = raw(server.path, b'{"version": 1, "op": "boom", "args": {}}\n')
    assert answer["ok"] is False and "internal error" in answer["error"]
    assert request(server.path, "status")["ok"] is True  # still serving


def test_a_silent_client_does_not_block_others(server: ControlServer) -> None:
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(str(server.path))
    try:
        results: list[dict[str, Any]] = []
        worker = threading.Thread(target=lambda: results.append(request(server.path, "status", timeout=5)))
        worker.start()
        worker.join(10)
        assert results and results[0]["ok"]
    finally:
        silent.close()


def trickle(
    path: Path, payload: bytes, pause: float, connected: threading.Barrier | None = None
) -> tuple[dict[str, Any] | None, float]:
    """Send `payload` a byte at a time, `pause` apart, as long as the daemon listens; its answer (None
    if it closed without one) and when it came."""
    started = time.monotonic()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        deadline = time.monotonic() + 10
        while True:
            try:
                sock.connect(str(path))
                break
            except BlockingIOError:  # the listen backlog is full for a moment: as a client would, retry
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        if connected is not None:
            connected.wait()
        for byte in payload:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            readable, _, _ = select.select([sock], [], [], pause)
            if readable:
                break
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return (json.loads(data) if data else None), time.monotonic() - started


def test_a_client_trickling_its_request_is_cut_off_at_one_deadline_per_request(
    server: ControlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "REQUEST_TIMEOUT", 0.5)
    answer, after = trickle(server.path, b'{"version": 1, "op": "status"}\n', pause=0.1)  # 3 s in all
    assert answer == {"version": 1, "ok": False, "error": "request not received within 0.5 s", "exit_code": 2}
    assert after < 1.5


def test_every_connection_slot_held_by_trickling_clients_locks_the_cli_out_for_one_deadline_at_most(
    server: ControlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "REQUEST_TIMEOUT", 0.5)
    payload = b'{"version": 1, "op": "status"}\n'
    connected = threading.Barrier(MAX_CONNECTIONS + 1, timeout=30)
    slow = [
        threading.Thread(target=trickle, args=(server.path, payload, 0.3, connected), daemon=True)
        for _ in range(MAX_CONNECTIONS)
    ]
    for client in slow:
        client.start()
    connected.wait()
    time.sleep(0.1)  # for the server to accept them all
    started = time.monotonic()
    while request(server.path, "status").get("ok") is not True:
        # a deadline per recv would hold every slot for the whole trickle (~10 s); one per request, 0.5 s
        assert time.monotonic() - started < 5.0, "the CLI stayed locked out"
        time.sleep(0.05)
    for client in slow:
        client.join(20)


def test_a_deeply_nested_request_gets_an_error_answer(server: ControlServer) -> None:
    nested = b'{"version": 1, "op": "status", "args": {"a": ' + b"[" * 30_000 + b"]" * 30_000 + b"}}\n"
    assert raw(server.path, nested) == {
        "version": 1,
        "ok": False,
        "error": "request nested too deeply",
        "exit_code": 2,
    }
    assert request(server.path, "status")["ok"] is True


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another uid")
@pytest.mark.skipif(
    not os.path.exists("/usr/bin/python3"), reason="needs a system python3 that uid 65534 can run"
)
def test_another_uid_is_refused_by_peer_credentials() -> None:
    public = Path(tempfile.mkdtemp(prefix="xenddd-peercred-"))
    public.chmod(0o755)  # so that uid 65534 can reach the socket: then only SO_PEERCRED stands in the way
    control = ControlServer(public / "control.sock", lambda op, args: {"ok": True})
    control.start()
    try:
        os.chmod(control.path, 0o666)
        # like xenddd's own client: the refusal may come (and the socket close) before the request is sent
        script = "\n".join(
            [
                "import os, socket",
                "os.setgid(65534); os.setuid(65534)",
                "s = socket.socket(socket.AF_UNIX)",
                f"s.connect({str(control.path)!r})",
                "try:",
                '    s.sendall(b\'{"version": 1, "op": "status", "args": {}}\\n\')',
                "except BrokenPipeError:",
                "    pass",
                "print(s.recv(4096).decode())",
            ]
        )
        result = subprocess.run(
            ["/usr/bin/python3", "-c", script],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
            cwd="/",
        )
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert answer["ok"] is False and answer["error"] == "uid 65534 may not control xenddd"
    finally:
        control.stop()
        shutil.rmtree(public)


def test_an_answer_sent_before_the_request_was_read_still_reaches_the_client(tmp_path: Path) -> None:
    """A refusal is sent and the connection closed without reading the request: a request too big for the
    socket buffers then fails to send (EPIPE), and the client must still read and return the answer."""
    path = tmp_path / "control.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)

    def refuse() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b'{"version": 1, "ok": false, "error": "uid 1000 may not control xenddd"}\n')

    thread = threading.Thread(target=refuse)
    thread.start()
    try:
        answer = request(path, "status", {"padding": "x" * (8 * 1024 * 1024)}, timeout=20)
    finally:
        thread.join(10)
        listener.close()
    assert answer["ok"] is False and answer["error"] == "uid 1000 may not control xenddd"


def test_no_daemon_is_reported_as_such(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning, match="not running"):
        request(tmp_path / "absent.sock", "status")
