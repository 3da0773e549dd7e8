"""The test bed's driver domains booted from the product image (`xenddd image build`, built into the test
bed's root at /boot/xenddd-dd by scripts/build-integration-image) instead of the legacy root disk with a
busybox initramfs and init=xenddd-it-dd: the default (`XENDDD_IT_DD_IMAGE=legacy` on the host keeps the
legacy one; results file `dd-image`). run-in-dom0.sh rewrites the installed config with
`python3 dd_image.py FILE`, unless the selection names a scenario that needs the legacy image.

The rewrite: each driver domain's kernel and initrd become its kind's image (each loads only its own
backends at boot), its command line the image's `xenddd.*` words (a bridge br0 for network domains,
which enslaves any vif of its own: domfw's uplink; the hotplug logs mirrored to the console, since they
die with the domain) with `quiet` (every kernel line costs console time under emulation; the init's own
reports are not kernel lines), its memory the image's documented minimum (`image check`: the unpacked
image lives in RAM, and a smaller domain is populated and booted faster), and its root disk (xvda) goes.
"""

from __future__ import annotations

import sys
from pathlib import Path

IMAGE = "/boot/xenddd-dd"
# built with --unpack-kernel (scripts/build-integration-image): the ELF, which Xen's domain builder maps as
# it is instead of decompressing a bzImage's payload in dom0 at every start
KERNEL = "vmlinux"
# xenddd.image.check's minimum, for a config with no PCI device: one that has some keeps its memory
# (xen-swiotlb's 64 MiB more)
MEMORY = "memory = 128"
LEGACY_CMDLINE = "root=/dev/xvda console=hvc0 init=/usr/local/sbin/xenddd-it-dd"
WORDS = {
    "network": "console=hvc0 quiet xenddd.bridge=br0 xenddd.port=br0,vif xenddd.console_logs=1",
    "block": "console=hvc0 quiet xenddd.console_logs=1",
}


def boot_from_image(toml: str, network: str = "network") -> str:
    """The same config with every driver domain booting the product image (line-based: the test bed's
    configs are written one key per line, blocks separated by blank lines); `network`: which of the
    network images (network-cloud: the one with Debian's cloud kernel)."""
    blocks = toml.split("\n\n")
    smallest = "[[driver_domain.pci]]" not in toml
    kept = [_rewritten(block, network, smallest) for block in blocks if not _is_root_disk(block)]
    return "\n\n".join(kept)


def _rewritten(block: str, network: str, smallest: bool) -> str:
    kind = "network" if 'kind = ["network"]' in block else "block"
    image = network if kind == "network" else kind
    lines = []
    for line in block.split("\n"):
        if line == 'kernel = "/boot/vmlinuz"':
            line = f'kernel = "{IMAGE}/{image}/{KERNEL}"'
        elif line == 'initrd = "/boot/dd-initrd.gz"':
            line = f'initrd = "{IMAGE}/{image}/initrd.img"'
        elif line.startswith("memory = ") and smallest:
            line = MEMORY
        elif line.startswith("cmdline = ") and LEGACY_CMDLINE in line:
            extra = line.split(LEGACY_CMDLINE, 1)[1].rstrip('"')
            line = f'cmdline = "{WORDS[kind]}{extra}"'
        lines.append(line)
    return "\n".join(lines)


def _is_root_disk(block: str) -> bool:
    lines = block.strip().split("\n")
    return lines[0] == "[[driver_domain.disk]]" and 'vdev = "xvda"' in lines


if __name__ == "__main__":
    path = Path(sys.argv[1])
    path.write_text(boot_from_image(path.read_text()))
