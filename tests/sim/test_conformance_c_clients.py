"""The simulated xenstored answers Debian's real C clients (xenstore-utils) as a real xenstored would."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from xenddd.sim.domain_client import DomainClient
from xenddd.sim.quotas import QuotaBook, Quotas
from xenddd.sim.xenstored import Xenstored
from xenddd.sim.xenstored_socket import SocketServer

pytestmark = pytest.mark.skipif(shutil.which("xenstore-read") is None, reason="xenstore-utils not installed")


def xs(server: SocketServer, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XENSTORED_PATH": str(server.path)}
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=10, check=check)


def test_write_read_list_and_remove(sim_xenstored: SocketServer) -> None:
    xs(sim_xenstored, "xenstore-write", "/vm/a/name", "web", "/vm/a/uuid", "u-1")
    assert xs(sim_xenstored, "xenstore-read", "/vm/a/name").stdout == "web\n"
    assert xs(sim_xenstored, "xenstore-list", "/vm/a").stdout.split() == ["name", "uuid"]
    assert 'name = "web"' in xs(sim_xenstored, "xenstore-ls", "/vm").stdout
    xs(sim_xenstored, "xenstore-rm", "/vm/a")
    assert xs(sim_xenstored, "xenstore-exists", "/vm/a", check=False).returncode == 1
    assert xs(sim_xenstored, "xenstore-exists", "/vm", check=False).returncode == 0


def test_reading_a_missing_node_fails_like_xenstored(sim_xenstored: SocketServer) -> None:
    result = xs(sim_xenstored, "xenstore-read", "/no/such/node", check=False)
    assert result.returncode != 0
    assert "couldn't read path /no/such/node" in result.stderr


def test_chmod_sets_owner_and_acl_shown_by_ls_p(sim_xenstored: SocketServer) -> None:
    xs(sim_xenstored, "xenstore-write", "/local/domain/3/device/vif/0/state", "1")
    xs(sim_xenstored, "xenstore-chmod", "/local/domain/3/device/vif/0/state", "n3", "r1")
    listing = xs(sim_xenstored, "xenstore-ls", "-p", "/local/domain/3/device/vif/0").stdout
    assert "(n3,r1)" in listing


def test_watch_sees_the_initial_event_and_a_later_write(sim_xenstored: SocketServer) -> None:
    xs(sim_xenstored, "xenstore-write", "/data/x", "1")
    env = {**os.environ, "XENSTORED_PATH": str(sim_xenstored.path)}
    watcher = subprocess.Popen(
        ["xenstore-watch", "-n", "2", "/data"], env=env, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 10
    while not sim_xenstored.engine.connections or not any(
        c.watches for c in sim_xenstored.engine.connections
    ):
        assert time.monotonic() < deadline, "xenstore-watch never registered its watch"
        time.sleep(0.01)
    xs(sim_xenstored, "xenstore-write", "/data/y", "2")
    out, _ = watcher.communicate(timeout=10)
    assert out.split() == ["/data", "/data/y"]


def test_an_oversized_message_drops_the_client_not_the_server(
    sim_xenstored: SocketServer, tmp_path: Path
) -> None:
    import socket
    import struct

    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(sim_xenstored.path))
        sock.sendall(struct.pack("<IIII", 2, 1, 0, 5000) + b"x" * 5000)
        sock.settimeout(5)
        assert sock.recv(16) == b""
    assert xs(sim_xenstored, "xenstore-exists", "/local", check=False).returncode == 0


def test_an_over_quota_watch_and_node_fail_in_debian_s_libxenstore_with_c_xenstored_s_errno(
    tmp_path: Path,
) -> None:
    """A socket served as domain 5 (what /dev/xen/xenbus is inside a guest): libxenstore turns the error
    name back into an errno through its own table, so an errno it does not know would show as EINVAL."""
    engine = Xenstored(QuotaBook(defaults=Quotas(watches=1, nodes=4)))
    dom0 = DomainClient(engine, 0)
    dom0.mkdir("/local/domain/5/data")
    dom0.set_perms("/local/domain/5", ["n5"])
    dom0.set_perms("/local/domain/5/data", ["n5"])
    server = SocketServer(engine, tmp_path / "domain5.sock", domid=5)
    server.start()
    try:
        os.environ["XENSTORED_PATH"] = str(server.path)
        lib = ctypes.CDLL("libxenstore.so.4", use_errno=True)
        lib.xs_open.restype = ctypes.c_void_p
        lib.xs_watch.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        lib.xs_write.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_uint,
        ]
        lib.xs_close.argtypes = [ctypes.c_void_p]
        handle = lib.xs_open(0)
        assert handle
        assert lib.xs_watch(handle, b"data/a", b"t") and lib.xs_watch(handle, b"data/b", b"t")
        assert not lib.xs_watch(handle, b"data/c", b"t")
        assert ctypes.get_errno() == errno.E2BIG  # Xen 4.17's watch quota (4.22 answers ENOSPC)
        assert lib.xs_write(handle, 0, b"data/x", b"1", 1) and lib.xs_write(handle, 0, b"data/y", b"1", 1)
        assert not lib.xs_write(handle, 0, b"data/z", b"1", 1)
        assert ctypes.get_errno() == errno.ENOSPC
        watcher = xs(server, "xenstore-watch", "-n", "1", "data", check=False)  # the same domain's
        assert watcher.returncode == 1 and "Unable to add watch" in watcher.stderr
        lib.xs_close(handle)
    finally:
        os.environ.pop("XENSTORED_PATH", None)
        server.stop()
    assert [h.quota for h in engine.quotas.hits] == ["watches", "nodes", "watches"]
