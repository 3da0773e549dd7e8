"""The simulated Xen host: a xenstored speaking the real wire protocol, a libxl-like toolstack and
netback/blkback/front-end state machines, with fault injection — for tests, the demo and the benchmarks.

Owns: the xenstore database and its engine (`store`, `xenstored`, `xenstored_ops`, `xenstored_conn`),
its socket server and in-domain clients (`xenstored_socket`, `domain_client`), domains and kernels
(`host`, `kernels`), the `Hypervisor` implementation (`hypervisor`), a whole host on a socket
(`socket_host`) and the same host in a process of its own (`remote_host`), pytest fixtures
(`pytest_plugin`).
May import: `xenddd.adapters` (the interfaces it implements and the xenstore client its fixtures hand
out), `xenddd.config`, and the shared vocabulary. Must never import recovery, registry, pci, service or cli:
it stands in for Xen, not for xenddd.
Imported only by `xenddd.service.simulated`, `xenddd.cli`, tests and benchmarks.
"""
