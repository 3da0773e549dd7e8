"""(a) smoke: real Xen, libvirt and xenstored answer, and xenddd runs as its systemd service."""

from __future__ import annotations

from conftest import run, wait_until, xenddd_json, xs_read


def test_xen_libvirt_and_xenstored_answer() -> None:
    assert "xen_version            : 4.17" in run("xl", "info").stdout
    run("virsh", "-c", "xen:///system", "list", "--all")
    assert xs_read("/local/domain/0/name") == "Domain-0"


def test_xenddd_is_installed_and_its_config_is_valid() -> None:
    assert run("xenddd", "--version").stdout.startswith("xenddd, version")
    assert "ok, 2 driver domain(s)" in run("xenddd", "config", "check").stdout


def test_the_daemon_reaches_ready_under_systemd_and_starts_its_driver_domains() -> None:
    run("systemctl", "start", "xenddd", timeout=600)  # Type=notify: returns once READY=1 was sent
    assert run("systemctl", "is-active", "xenddd", check=False).stdout.strip() == "active"
    status = run("systemctl", "show", "-p", "StatusText", "xenddd").stdout
    assert "driver domain(s)" in status
    domains = {d["name"]: d for d in xenddd_json("list")["items"]}
    assert sorted(domains) == ["domnet", "domstore"]
    assert all(d["domid"] is not None for d in domains.values()), domains
    status = run("xenddd", "status").stdout
    assert "domnet" in status and "domstore" in status
    for name, domain in domains.items():
        wait_until(
            lambda d=domain: xs_read(f"/local/domain/{d['domid']}/data/ready") == "1", 300, f"{name} ready"
        )
