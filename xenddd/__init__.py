"""xenddd, the Xen driver-domain daemon."""

__version__ = "0.1.0"
