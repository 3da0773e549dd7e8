"""Driver-domain images: one Debian kernel and one initramfs with everything a network or block driver
domain needs (backends, `xl devd`, hotplug scripts, a small init), so that a driver domain boots
with no root disk and is ready in seconds.

Owns: reading an installed Debian root (`root_tree`: files, symlinks under merged /usr, which package owns
what), what each kind of driver domain needs (`recipe`), the closures of shared libraries (`elf`,
`libraries`) and kernel modules (`modules`), a kernel package unpacked beside the root
(`kernel_package`, fetched through a source the CLI wires in), the deterministic archive (`cpio`), the
record of what went in (`manifest`), the build itself (`builder`), the driver domain's kernel command
line (`cmdline`, the twin of the init's parser) and what `xenddd image check` finds (`check`). The init is
package data (`dd-init.sh`).
May import: `xenddd.config` and the shared vocabulary. Runs no process and touches no host state beyond
reading the root it is given and writing the output and scratch directories it is told.
Must not import: `xenddd.adapters`, recovery, service, sim, cli.
"""
