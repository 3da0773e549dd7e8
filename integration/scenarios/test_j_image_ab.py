"""(j, on demand) The product driver-domain image against the test bed's legacy one, in one boot, and the
product image built with Debian's cloud kernel (`network-cloud`: Xen PV and every backend, few hardware
drivers): domnet is crashed ROUNDS times with each, in the order legacy, product, cloud, cloud, product,
legacy, ... (so a drift of the machine's speed during the run weighs on all alike), switching by
`systemctl reload` with the config booting one or another (dd_image.py). Each crash waits for a healthy
uptime first, so no backoff delays the restart: the `ready` phase (detection to the readiness key) is
then the driver domain's restart-to-ready, and its own uptime when it wrote the key is read from its
console. Each round goes to mttr.tsv (`how` names the image); the medians and their ratios to legacy to
results/<machine>/image_ab.txt.
XENDDD_IT_SELECT='smoke or image_ab' XENDDD_IT_RELEASES=trixie scripts/integration -k pc
"""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

from conftest import (
    HEALTHY,
    RESULTS,
    Console,
    domid,
    recovery_phases,
    recovery_state,
    report_mttr,
    run,
    say,
    wait_until,
    xenddd_json,
    xs_read,
)
from dd_image import IMAGE, boot_from_image

ON_DEMAND = True

CONFIG = Path("/etc/xenddd/xenddd.toml")
ROUNDS = 3  # crashes per image
# "XENDDD-IT-DD: ready domid=7 uptime=14.52" (legacy) or "xenddd-dd: ready domid=7 uptime=9.87" (product)
READY = re.compile(r"ready domid=(\d+) uptime=([0-9.]+)")


def test_image_ab_domnet_restart_to_ready_legacy_against_product() -> None:
    legacy = CONFIG.read_text()
    assert IMAGE not in legacy, "run (j) on the legacy test bed: it switches to the product image itself"
    configs = {
        "legacy": legacy,
        "product": boot_from_image(legacy),
        "cloud": boot_from_image(legacy, network="network-cloud"),
    }
    images = tuple(configs)
    order = [images if n % 2 == 0 else images[::-1] for n in range(ROUNDS)]
    measured: dict[str, list[dict[str, float]]] = {image: [] for image in images}
    born = time.monotonic()
    try:
        for sequence in order:
            for image in sequence:
                CONFIG.write_text(configs[image])
                run("systemctl", "reload", "xenddd", timeout=120)
                measured[image].append(crash_and_measure(image, born))
                born = time.monotonic()
    finally:
        CONFIG.write_text(legacy)
        run("systemctl", "reload", "xenddd", timeout=120, check=False)
    lines = []
    for key in ("ready", "restarted", "dd_uptime"):
        medians = {image: statistics.median(r[key] for r in rounds) for image, rounds in measured.items()}
        shown = ", ".join(
            f"{image} {medians[image]:.1f} s"
            + ("" if image == "legacy" else f" ({medians[image] / medians['legacy']:.2f})")
            for image in images
        )
        lines.append(f"{key}: {shown}")
    report = "\n".join(lines)
    (RESULTS / "image_ab.txt").write_text(report + "\n")
    say("image A/B, medians of " + str(ROUNDS) + ": " + report.replace("\n", "; "))


def crash_and_measure(image: str, born: float) -> dict[str, float]:
    dd = wait_until(lambda: domid("domnet"), 300, "domnet running")
    time.sleep(max(0.0, born + HEALTHY - time.monotonic()))
    seen = len(xenddd_json("events")["items"])
    console = Console("domnet").mark()
    started = time.monotonic()
    run("xenstore-write", f"/local/domain/{dd}/data/crash", "1")
    new = wait_until(lambda: (d := domid("domnet")) not in (None, dd) and d, 300, f"a new domnet ({image})")
    wait_until(lambda: xs_read(f"/local/domain/{new}/data/ready") == "1", 300, f"domnet ready ({image})")
    observed = time.monotonic() - started
    phases = recovery_phases("domnet", seen, {})
    line = wait_until(
        lambda: next((m for ln in console.lines() if (m := READY.search(ln)) and m[1] == str(new)), None),
        60,
        f"domnet's ready line on its console ({image})",
        explain=lambda: recovery_state(seen, {}),
    )
    uptime = float(line[2])
    report_mttr("domnet", f"kernel crash, {image} image", phases, observed, dd_ready=uptime)
    return {"ready": phases["ready"], "restarted": phases["restarted"], "dd_uptime": uptime}
