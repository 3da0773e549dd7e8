"""(z, last) the Debian package as an operator meets it after a day's work: what it installed is where the
README says, and `apt purge` takes away what it and the daemon created and nothing else. It runs after
every other scenario of its boot (they share the installed package)."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

from conftest import RESULTS, run

STATE = Path("/var/lib/xenddd")


def installed_packages() -> set[str]:
    return set(run("dpkg-query", "-W", "-f", "${Package}\\n").stdout.split())


def test_the_package_installed_the_documented_files_and_apt_purge_removes_what_it_created() -> None:
    owned = [line for line in run("dpkg", "-L", "xenddd").stdout.splitlines() if line.strip()]
    conffiles = run("dpkg-query", "-W", "-f", "${Conffiles}", "xenddd").stdout.split()
    assert conffiles[:1] == ["/etc/xenddd/xenddd.toml"], conffiles
    for path in (
        "/usr/share/doc/xenddd/examples/xenddd.toml",
        "/usr/share/man/man1/xenddd.1.gz",
        "/usr/share/man/man1/xenddd-config-check.1.gz",
        "/usr/share/bash-completion/completions/xenddd",
    ):
        assert path in owned and Path(path).is_file(), path
    assert stat.S_IMODE(STATE.stat().st_mode) == 0o700
    assert any(STATE.iterdir())  # the scenarios before this one left the daemon's records
    shutil.copytree(STATE, RESULTS / "xenddd-state", dirs_exist_ok=True)  # for the logs, before it goes
    others = installed_packages() - {"xenddd"}

    run("systemctl", "stop", "xenddd", timeout=120)
    run("apt-get", "purge", "-y", "xenddd", timeout=300)

    assert run("dpkg-query", "-W", "-f", "${Status}", "xenddd", check=False).stdout.strip() in (
        "",
        "unknown ok not-installed",
    )
    assert installed_packages() == others  # nothing else removed
    # its directories are shared (/usr/bin; /lib, a link to usr/lib on trixie): only its files must go
    leftovers = [p for p in owned if Path(p).is_file()]
    assert not leftovers, leftovers
    assert not Path("/etc/xenddd").exists()
    assert not STATE.exists()
    assert run("systemctl", "cat", "xenddd", check=False).returncode != 0
