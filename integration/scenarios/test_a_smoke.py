"""(a) smoke: real Xen, libvirt and xenstored answer, and xenddd runs as its systemd service."""

from __future__ import annotations

from conftest import run, wait_until, xenddd_json, xs_read


def test_xen_libvirt_and_xenstored_answer() -> None:
    assert "xen_version            : 4.17" in run("xl", "info").stdout
    run("virsh", "-c", "xen:///system", "list", "--all")
    assert xs_read("/local/domain/0/name") == "Domain-0"


def test_xenddd_is_installed_and_its_config_is_valid() -> None:
    assert run("xenddd", "--version").stdout.startswith("xenddd, version")
    assert "ok, 1 driver domain(s)" in run("xenddd", "config", "check").stdout


def test_the_daemon_reaches_ready_under_systemd_and_starts_its_driver_domain() -> None:
    run("systemctl", "start", "xenddd", timeout=600)  # Type=notify: returns once READY=1 was sent
    assert run("systemctl", "is-active", "xenddd", check=False).stdout.strip() == "active"
    status = run("systemctl", "show", "-p", "StatusText", "xenddd").stdout
    assert "driver domain(s)" in status
    listing = xenddd_json("list")
    (domnet,) = listing["items"]
    assert domnet["name"] == "domnet" and domnet["domid"] is not None
    assert "domnet" in run("xenddd", "status").stdout
    wait_until(lambda: xs_read(f"/local/domain/{domnet['domid']}/data/ready") == "1", 400, "domnet ready")
