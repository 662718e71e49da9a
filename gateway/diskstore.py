"""``DiskStore``: the typed, best-effort facade over ``diskcache`` under ``store.path``.

Beside the onion: the response cache (``gateway.cache``) and the idempotency
records (``gateway.idempotency``) keep bytes here under their own key prefixes.
Blocking calls run on a small pool of this store's own, with short timeouts,
and every failure (a missing or unwritable directory, a full disk, a broken
database, a hung disk) is logged once per kind and then ignored: callers get a
miss or a dropped write, never an exception. The pool is its own rather than
anyio's shared one so that a hung disk holds at most ``THREADS`` threads and
nothing else. The disk is opened on first use, so a config that never caches
never touches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sqlite3
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Final, Protocol

import diskcache
import msgspec

from gateway.writebehind import WriteBehind

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from policies.clock import Clock

log = logging.getLogger("fusebox.cache")

#: Worker threads for disk calls; more concurrent calls wait in their queue.
THREADS: Final = 4
#: Calls queued or running beyond this are skipped (a miss, a dropped write).
MAX_IN_FLIGHT: Final = 64
#: A read on the request path gives up after this long (then it is a miss).
READ_TIMEOUT_S: Final = 0.25
#: A background write gives up after this long.
WRITE_TIMEOUT_S: Final = 2.0
#: SQLite's own busy timeout inside diskcache.
SQLITE_TIMEOUT_S: Final = 0.1
#: After the cache failed to open, it is not tried again for this long.
REOPEN_AFTER_S: Final = 5.0
SHARDS: Final = 4
_MIB: Final = 1024 * 1024
_canonical: Final = msgspec.json.Encoder(order="sorted").encode


def digest(value: object) -> str:
    """Return the sha256 (hex) of ``value``'s canonical JSON (keys sorted)."""
    return hashlib.sha256(_canonical(value)).hexdigest()


class _DiskCache(Protocol):
    """The part of ``diskcache.FanoutCache`` this facade uses."""

    def get(self, key: str, default: None = None, *, retry: bool) -> object:
        """Return the value under ``key`` or ``default``."""
        ...

    def set(self, key: str, value: bytes, expire: float, *, retry: bool) -> bool:
        """Store ``value``; False on a database timeout."""
        ...

    def delete(self, key: str, *, retry: bool) -> bool:
        """Forget ``key``."""
        ...

    def close(self) -> None:
        """Close this thread's database connections."""
        ...


class _UnavailableError(Exception):
    """The cache directory could not be opened lately; not tried again yet."""


class DiskStore(WriteBehind):
    """Bytes by string key on local disk; every call may quietly give nothing."""

    def __init__(self, directory: Path, *, size_limit_mib: float, clock: Clock) -> None:
        """Remember where the cache lives; the disk is opened on first use."""
        super().__init__()
        self._directory = directory
        self._size_limit = int(size_limit_mib * _MIB)
        self._clock = clock
        self._disk: _DiskCache | None = None
        self._open_failed_at: float | None = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="fusebox-cache")
        #: Disk calls queued or running; the pool's threads discard their own
        #: (a set's add and discard are atomic under the GIL).
        self._in_flight: set[Future[object]] = set()
        #: No disk calls at all (closed).
        self._closed = False

    async def get(self, key: str) -> bytes | None:
        """Return the bytes stored under ``key``, or None (absent or unreadable)."""
        value = await self._call("read", READ_TIMEOUT_S, self._get, key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, expire_s: float) -> bool:
        """Store ``value`` for ``expire_s`` seconds; tell whether it was written."""
        done = await self._call(
            "write", WRITE_TIMEOUT_S, self._set, key, value, expire_s
        )
        return done is True

    async def delete(self, key: str) -> None:
        """Forget ``key`` (a corrupt entry); failures are ignored."""
        await self._call("delete", WRITE_TIMEOUT_S, self._delete, key)

    def _is_known(self, what: BaseException | str) -> bool:
        # An unavailable disk was logged with its cause when it failed to open.
        return isinstance(what, _UnavailableError)

    async def _call(
        self, op: str, timeout_s: float, func: Callable[..., object], *args: object
    ) -> object:
        if self._closed:
            return None
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            self.failed(op, "the disk is too slow: calls are piling up")
            return None
        future = self._pool.submit(func, *args)
        self._in_flight.add(future)
        future.add_done_callback(self._in_flight.discard)
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.wrap_future(future)
        except TimeoutError:
            self.failed(op, f"no answer within {timeout_s:g}s")
        except Exception as exc:
            self.failed(op, exc)
            if isinstance(exc, OSError | sqlite3.Error):
                # A broken directory or database: open it anew on the next call.
                with contextlib.suppress(RuntimeError):
                    self._pool.submit(self._drop)
        return None

    # The methods below run on the pool's threads.

    def _open(self) -> _DiskCache:
        with self._lock:
            if self._disk is not None:
                return self._disk
            now = self._clock.monotonic()
            failed_at = self._open_failed_at
            if failed_at is not None and now - failed_at < REOPEN_AFTER_S:
                raise _UnavailableError(f"cannot open {self._directory} lately")
            try:
                disk: _DiskCache = diskcache.FanoutCache(
                    str(self._directory),
                    shards=SHARDS,
                    timeout=SQLITE_TIMEOUT_S,
                    size_limit=self._size_limit,
                    eviction_policy="least-recently-stored",
                )
            except BaseException:
                self._open_failed_at = now
                raise
            self._disk = disk
            return disk

    def _drop(self) -> None:
        """Forget the open cache after a disk error: the next call opens it anew."""
        with self._lock:
            disk, self._disk = self._disk, None
        if disk is not None:
            with contextlib.suppress(Exception):
                disk.close()

    def _get(self, key: str) -> object:
        return self._open().get(key, None, retry=False)

    def _set(self, key: str, value: bytes, expire_s: float) -> object:
        return self._open().set(key, value, expire_s, retry=False)

    def _delete(self, key: str) -> object:
        return self._open().delete(key, retry=False)

    async def aclose(self) -> None:
        """Let pending writes finish (briefly), then close the disk and the pool."""
        if not await self._drain_writes():
            return
        self._closed = True
        self._pool.submit(self._drop)
        self._pool.shutdown(wait=False, cancel_futures=False)
