"""(a) smoke: the Xen of this dom0's Debian release, libvirt and xenstored answer, xenddd is installed from
its Debian package, and runs as its systemd service."""

from __future__ import annotations

from pathlib import Path

from conftest import ready_instance, run, xenddd_json, xs_read

XEN_OF_RELEASE = {"bookworm": "4.17", "trixie": "4.20"}


def release() -> str:
    fields = dict(
        line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
    )
    return fields["VERSION_CODENAME"]


def test_xen_of_the_release_libvirt_and_xenstored_answer() -> None:
    assert f"xen_version            : {XEN_OF_RELEASE[release()]}" in run("xl", "info").stdout
    run("virsh", "-c", "xen:///system", "list", "--all")
    assert xs_read("/local/domain/0/name") == "Domain-0"


def test_xenddd_is_installed_from_its_package_disabled_and_its_config_is_valid() -> None:
    version = run("dpkg-query", "-W", "-f", "${Status} ${Version}", "xenddd").stdout
    assert version.startswith("install ok installed "), version
    assert run("xenddd", "--version").stdout.strip() == f"xenddd, version {version.split()[-1]}"
    assert run("dpkg", "-S", "/usr/bin/xenddd").stdout.startswith("xenddd:")
    # the package enables nothing: the operator does, once the config describes driver domains
    assert run("systemctl", "is-enabled", "xenddd", check=False).stdout.strip() == "disabled"
    assert run("systemctl", "is-active", "xenddd", check=False).stdout.strip() == "inactive"
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
    for name in domains:
        ready_instance(name)
