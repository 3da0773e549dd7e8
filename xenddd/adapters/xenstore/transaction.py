"""One xenstore transaction's operations, handed to the body that `Xenstore.transaction` runs and retries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xenddd.adapters.xenstore.client import Xenstore


class Transaction:
    """The operations of one xenstore transaction; created by `Xenstore.transaction`."""

    def __init__(self, xenstore: Xenstore, tx_id: int) -> None:
        self._xs = xenstore
        self.tx_id = tx_id

    def read(self, path: str) -> bytes | None:
        return self._xs.read(path, self.tx_id)

    def read_many(self, paths: Sequence[str]) -> list[bytes | None]:
        return self._xs.read_many(paths, self.tx_id)

    def directory(self, path: str) -> list[str] | None:
        return self._xs.directory(path, self.tx_id)

    def write(self, path: str, value: bytes | str) -> None:
        self._xs.write(path, value, self.tx_id)

    def mkdir(self, path: str) -> None:
        self._xs.mkdir(path, self.tx_id)

    def rm(self, path: str) -> None:
        self._xs.rm(path, self.tx_id)

    def set_perms(self, path: str, perms: Sequence[str]) -> None:
        self._xs.set_perms(path, perms, self.tx_id)

    def get_perms(self, path: str) -> list[str] | None:
        return self._xs.get_perms(path, self.tx_id)
