"""Recipient keys: e-mail addresses become keyed hashes on the way in (HMAC-SHA-256).

``loopexp assign`` (recipient lists) and ``loopexp ingest`` (ESP exports) both call
:func:`hash_addresses` with the same :class:`HashKey`, so a recipient's key in the assignment equals
its key in the canonical events, and no raw address is written anywhere but the send lists. The key
is a secret of the team's (an environment variable or a file), never a default in production: a
plain SHA-256 of an address can be reversed by hashing a list of known addresses.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopexp.core import config
from loopexp.core.errors import ConfigError
from loopexp.core.parallel import fill_rows

#: The demo's key: public, so it protects nothing. Only for simulated data and tutorials.
DEMO_KEY = b"loopexp-demo-key-not-for-production"

#: What an e-mail address looks like, for scanning outputs for leaks (deliberately broad).
EMAIL_PATTERN = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


def redact_addresses(text: str) -> str:
    """``text`` with every e-mail address replaced, for error messages and logs."""
    return EMAIL_PATTERN.sub("[e-mail address removed]", text)


class HashKeyError(ConfigError):
    """No usable hashing key: says where loopexp looked and how to provide one."""


@dataclass(frozen=True)
class HashKey:
    """The secret of the keyed hash and where it came from (never printed)."""

    secret: bytes = field(repr=False)
    source: str
    """``env LOOPEXP_HASH_KEY``, ``file <path>`` or ``demo``."""

    @property
    def is_demo(self) -> bool:
        """True for the public demo key, which must not be used on real addresses."""
        return self.source == "demo"

    def fingerprint(self) -> str:
        """A short id of the key (not the key), recorded with an assignment to detect a change."""
        return hashlib.sha256(b"loopexp-key-id:" + self.secret).hexdigest()[:12]


def load_hash_key(key_file: str | Path | None = None, *, allow_demo: bool = False) -> HashKey:
    """The hashing key from ``key_file``, ``$LOOPEXP_HASH_KEY_FILE`` or ``$LOOPEXP_HASH_KEY``.

    With none of them, the public demo key is returned only when ``allow_demo`` is true (simulation,
    the demo); otherwise :class:`HashKeyError` says how to set one.
    """
    path = key_file or config.hash_key_file()
    if path:
        path = Path(path)
        try:
            secret = path.read_text(encoding="utf-8").strip().encode()
        except (OSError, UnicodeDecodeError) as exc:
            raise HashKeyError(f"hash key file {path}: cannot be read ({exc})") from None
        if not secret:
            raise HashKeyError(f"hash key file {path} is empty; put a long random secret in it")
        return HashKey(secret, f"file {path}")
    value = config.hash_key()
    if value:
        return HashKey(value.encode(), f"env {config.HASH_KEY}")
    if allow_demo:
        return HashKey(DEMO_KEY, "demo")
    raise HashKeyError(
        f"no key to hash e-mail addresses with: set {config.HASH_KEY} (a long random secret, "
        "e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`) or "
        f"{config.HASH_KEY_FILE} (a file holding it). Keep it: the same key must hash the "
        "recipient list and the ESP's events."
    )


def normalize_address(address: str) -> str:
    """The form an address is hashed in: surrounding space removed, lower case."""
    return address.strip().lower()


def hash_addresses(addresses: Iterable[str], key: HashKey) -> list[str]:
    """Keyed hash (HMAC-SHA-256, first 128 bits as hex) of each normalised address.

    Equal to ``hmac.new(secret, normalize_address(a).encode(), "sha256").hexdigest()[:32]``; the
    inner and outer states are computed once and copied per address, which is ~2x faster (and
    ~2x faster than ``hmac.digest``, whose OpenSSL 3 one-shot looks the algorithm up on every
    call). Long lists go through :func:`hash_address_array` (on every core).
    """
    values = addresses if isinstance(addresses, list) else list(addresses)
    if len(values) >= _ARRAY_PATH_FROM and all(type(v) is str for v in values):
        return hash_address_array(pa.array(values, type=pa.string()), key).to_pylist()
    template = hmac.new(key.secret, digestmod=hashlib.sha256)
    out = []
    for address in values:
        h = template.copy()
        h.update(normalize_address(address).encode())
        out.append(h.hexdigest()[:32])
    return out


def hash_address_array(
    addresses: pa.Array | pa.ChunkedArray,
    key: HashKey,
    workers: int | None = None,
    distinct: bool = False,
) -> pa.Array:
    """:func:`hash_addresses` of an Arrow text column: one key per row, null for a null address.

    The hashing is split across the cores by :func:`loopexp.core.parallel.fill_rows` (``workers``
    caps it), and the hex keys are spelled with NumPy, not one Python string per row.
    ``distinct=True`` hashes each distinct address once: worth it where addresses repeat (event
    streams, contact histories), not in a recipient list, where Arrow's hash table costs a third
    of the hashing it would save (bench/bench_assign.py).
    """
    if isinstance(addresses, pa.ChunkedArray):
        addresses = addresses.combine_chunks()
    if addresses.type != pa.string():
        addresses = addresses.cast(pa.string())
    valid = pc.is_valid(addresses) if addresses.null_count else None
    values = pc.fill_null(addresses, "") if valid is not None else addresses
    encoded = pc.dictionary_encode(values) if distinct else None
    if encoded is not None:
        values = encoded.dictionary
    template = hmac.new(key.secret, digestmod=hashlib.sha256)

    def fill(lo: int, hi: int, out: np.ndarray) -> None:
        copy, rows_out = template.copy, out.view(np.uint8).reshape(-1, 16)
        for start in range(lo, hi, _CHUNK):
            texts = values.slice(start, min(_CHUNK, hi - start)).to_pylist()
            digests = []
            for address in texts:
                h = copy()
                h.update(address.strip().lower().encode())  # normalize_address, inlined
                digests.append(h.digest())
            rows = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, 32)[:, :16]
            rows_out[start - lo : start - lo + len(texts)] = rows

    keyed = fill_rows(len(values), _DIGEST16, fill, workers).view(np.uint8)
    hex_text = _HEX_PAIRS[keyed.reshape(-1, 16)]  # two ASCII hex digits per byte, as uint16
    width = 32
    offsets = np.arange(0, width * (len(values) + 1), width, dtype=np.int64)
    out = pa.Array.from_buffers(
        pa.large_string(), len(values), [None, pa.py_buffer(offsets), pa.py_buffer(hex_text)]
    )
    if encoded is not None:
        out = out.take(encoded.indices)
    if valid is not None:
        out = pc.if_else(valid, out, pa.scalar(None, out.type))
    return out.cast(pa.string()) if width * len(out) < 2**31 else out


_CHUNK = 1 << 16
_ARRAY_PATH_FROM = 1 << 14
_DIGEST16 = np.dtype((np.void, 16))
_HEX_PAIRS = np.frombuffer(
    "".join(f"{i:02x}" for i in range(256)).encode(), dtype=np.uint16
)  # byte value -> its two hex digits, in memory order


def hash_address(address: str, key: HashKey) -> str:
    """Keyed hash of one address (see :func:`hash_addresses`)."""
    return hash_addresses([address], key)[0]
