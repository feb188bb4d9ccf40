"""Every ``LOOPEXP_*`` environment variable loopexp reads, in one place.

A setting is read when it is used (not at import), so a test or a notebook that sets a variable
sees it take effect. An argument or a spec field always wins over the environment; the functions
here give the environment's value or the default.

| variable | what |
|---|---|
| ``LOOPEXP_HASH_KEY`` / ``LOOPEXP_HASH_KEY_FILE`` | the secret of the keyed address hash, or a file holding it |
| ``LOOPEXP_HASH_WORKERS`` | processes the hashing may use (``1``: the calling process only) |
| ``LOOPEXP_DUCKDB_MEMORY_LIMIT`` | DuckDB's memory limit (default: half the memory available, at most 800 MiB per DuckDB thread; a third of the address space left under ``ulimit -v``) |
| ``LOOPEXP_DUCKDB_TEMP_DIR`` | where DuckDB spills (default: a fresh temporary folder) |
| ``LOOPEXP_DUCKDB_THREADS`` | DuckDB's threads (default: one per core) |
| ``LOOPEXP_SPARK_MASTER`` / ``LOOPEXP_SPARK_PARTITIONS`` | the Spark engine's master and shuffle partitions |
| ``LOOPEXP_LOCK_DIR`` | the folder of the one-run-per-experiment lock files |
| ``LOOPEXP_STALE_AFTER_HOURS`` | when a RUNNING MLflow run counts as abandoned (default 6) |
| ``LOOPEXP_KEEP_ATTEMPTS`` | attempt folders kept per output folder (default 30) |
| ``LOOPEXP_DEBUG`` | the CLI shows the traceback of an unexpected error |
| ``LOOPEXP_SENDGRID_VERIFICATION_KEY`` … ``LOOPEXP_SNS_TOPIC_ARNS`` | the webhook receiver's secrets (``loopexp collect``; each also as ``…_FILE``; see :data:`WEBHOOK_SECRETS`) |
| ``LOOPEXP_MANDRILL_WEBHOOK_URL`` | the public URL Mandrill signs (behind a proxy it differs from the request's) |
| ``LOOPEXP_COLLECT_ALLOW_UNSIGNED`` | providers the receiver accepts without a secret (comma-separated; loud warning) |
| ``LOOPEXP_COLLECT_INSTANCE`` | the receiver's instance id in its segment names (default: host name) |
| ``LOOPEXP_COLLECT_OUT`` | the receiver's output folder when served by ``uvicorn --factory`` |
| ``LOOPEXP_COLLECT_BUCKET`` | ``s3://bucket/prefix`` the receiver ships its sealed segments to |
| ``LOOPEXP_LOCK_URI`` | PostgreSQL holding the cross-host run lock (default: the store's, if PostgreSQL) |
| ``LOOPEXP_ARTIFACT_ROOT`` | artifact root of new experiments on a database store (e.g. ``s3://…``) |
"""  # noqa: E501 (a table)

from __future__ import annotations

import os
import tempfile
from contextlib import suppress
from pathlib import Path

from loopexp.core.errors import ConfigError

HASH_KEY = "LOOPEXP_HASH_KEY"
HASH_KEY_FILE = "LOOPEXP_HASH_KEY_FILE"
HASH_WORKERS = "LOOPEXP_HASH_WORKERS"
DUCKDB_MEMORY_LIMIT = "LOOPEXP_DUCKDB_MEMORY_LIMIT"
DUCKDB_TEMP_DIR = "LOOPEXP_DUCKDB_TEMP_DIR"
DUCKDB_THREADS = "LOOPEXP_DUCKDB_THREADS"
SPARK_MASTER = "LOOPEXP_SPARK_MASTER"
SPARK_PARTITIONS = "LOOPEXP_SPARK_PARTITIONS"
LOCK_DIR = "LOOPEXP_LOCK_DIR"
STALE_AFTER_HOURS = "LOOPEXP_STALE_AFTER_HOURS"
KEEP_ATTEMPTS = "LOOPEXP_KEEP_ATTEMPTS"
DEBUG = "LOOPEXP_DEBUG"
# The webhook receiver (loopexp collect, issue #24)
SENDGRID_VERIFICATION_KEY = "LOOPEXP_SENDGRID_VERIFICATION_KEY"
MAILGUN_SIGNING_KEY = "LOOPEXP_MAILGUN_SIGNING_KEY"
POSTMARK_BASIC_AUTH = "LOOPEXP_POSTMARK_BASIC_AUTH"
MANDRILL_WEBHOOK_KEY = "LOOPEXP_MANDRILL_WEBHOOK_KEY"
MANDRILL_WEBHOOK_URL = "LOOPEXP_MANDRILL_WEBHOOK_URL"
KLAVIYO_WEBHOOK_SECRET = "LOOPEXP_KLAVIYO_WEBHOOK_SECRET"
SNS_TOPIC_ARNS = "LOOPEXP_SNS_TOPIC_ARNS"
COLLECT_ALLOW_UNSIGNED = "LOOPEXP_COLLECT_ALLOW_UNSIGNED"
COLLECT_INSTANCE = "LOOPEXP_COLLECT_INSTANCE"
COLLECT_OUT = "LOOPEXP_COLLECT_OUT"
COLLECT_BUCKET = "LOOPEXP_COLLECT_BUCKET"
#: Provider → the variable of its webhook secret(s) (a list: keys can rotate).
WEBHOOK_SECRETS = {
    "sendgrid": SENDGRID_VERIFICATION_KEY,
    "mailgun": MAILGUN_SIGNING_KEY,
    "ses": SNS_TOPIC_ARNS,
    "postmark": POSTMARK_BASIC_AUTH,
    "mandrill": MANDRILL_WEBHOOK_KEY,
    "klaviyo": KLAVIYO_WEBHOOK_SECRET,
}
# the team's store (loopexp.run.lock, loopexp.track.tracking)
LOCK_URI = "LOOPEXP_LOCK_URI"
ARTIFACT_ROOT = "LOOPEXP_ARTIFACT_ROOT"

#: Share of the memory available to this process that DuckDB may use by default. DuckDB's own
#: default (80 % of physical RAM) ignores address-space and cgroup limits and other processes.
DEFAULT_MEMORY_SHARE = 0.5
#: Under an address-space limit (``ulimit -v``, RLIMIT_AS), DuckDB's share of the address space
#: still free. RLIMIT_AS counts virtual memory: beside DuckDB's buffers (which its memory_limit
#: bounds) the allocator reserves 64 MiB arenas, threads their stacks, libraries their mappings.
#: Measured (tests/test_memory_limit.py, 5 M recipients, all metrics, 2 GiB limit, ~0.55 GiB
#: taken before DuckDB starts): a 1024 or 700 MiB DuckDB limit failed to map a 64 MiB block,
#: 500 MiB spilled and finished; a third of what is left (~500 MiB there) is that.
ADDRESS_SPACE_SHARE = 1 / 3
#: DuckDB's default budget per thread it runs, whatever the machine's size: bounded memory by
#: default (issue 29), spilling past it. Measured (bench/README.md, 10 M recipients, all metrics,
#: 2 threads, side by side at load ~1.8): a 1,700 MiB budget ran in 16.8 s wall / 32.6 CPU-s at
#: 1,846 MiB peak RSS; half of the 24 GB machine (12 GiB) in 20.4 s / 39.8 CPU-s at 2,527 MiB:
#: past this budget more memory bought no speed, only a bigger process.
DEFAULT_MEMORY_PER_THREAD = 800 * 2**20
DEFAULT_STALE_AFTER_HOURS = 6.0
DEFAULT_KEEP_ATTEMPTS = 30
DEFAULT_SPARK_MASTER = "local[*]"
DEFAULT_SPARK_PARTITIONS = "8"
#: Worker processes at most, whatever the core count (more only adds memory).
MAX_HASH_WORKERS = 8


def text(name: str) -> str:
    """The variable's value with surrounding space removed; ``""`` when unset."""
    return os.environ.get(name, "").strip()


def positive_int(name: str) -> int | None:
    """The variable as a positive integer, or None when unset or not one."""
    raw = text(name)
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


def hash_key_file() -> str | None:
    """The file named by ``$LOOPEXP_HASH_KEY_FILE``, if set."""
    return text(HASH_KEY_FILE) or None


def hash_key() -> str:
    """``$LOOPEXP_HASH_KEY`` (``""`` when unset)."""
    return text(HASH_KEY)


def hash_workers_cap() -> int:
    """The most worker processes the hashing may use."""
    return positive_int(HASH_WORKERS) or MAX_HASH_WORKERS


def _address_space_used() -> int:
    """The virtual size of this process now (``VmSize``), 0 where /proc is not there."""
    with suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def default_memory_limit() -> str:
    """Half of the memory this process may use (RAM, cgroup), at most a budget per thread.

    The budget is :data:`DEFAULT_MEMORY_PER_THREAD` for each thread DuckDB runs. Under
    ``ulimit -v`` at most a third of the address space still free (:data:`ADDRESS_SPACE_SHARE`):
    that limit counts virtual memory, not only DuckDB's buffers.
    """
    candidates = []
    with suppress(ValueError, OSError, AttributeError):
        candidates.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    try:
        import resource  # noqa: PLC0415 (POSIX only)

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
            left = max(0, soft - _address_space_used())
            # expressed before the common share below is applied
            candidates.append(int(left * ADDRESS_SPACE_SHARE / DEFAULT_MEMORY_SHARE))
    except (ImportError, ValueError, OSError):
        pass
    try:
        cgroup = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if cgroup.isdigit():
            candidates.append(int(cgroup))
    except OSError:
        pass
    if not candidates:
        return "2GiB"
    limit = min(int(min(candidates) * DEFAULT_MEMORY_SHARE), DEFAULT_MEMORY_PER_THREAD * _threads())
    return f"{max(64, limit // 2**20)}MiB"


def _threads() -> int:
    """The threads DuckDB runs: ``$LOOPEXP_DUCKDB_THREADS``, else the cores this process may use."""
    return duckdb_threads() or usable_cpus()


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells it), at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cpus or 1)


def duckdb_resources(
    memory_limit: str | None = None, temp_directory: str | Path | None = None
) -> tuple[str, str | None]:
    """The memory limit and spill folder a run uses: argument, else environment, else default.

    The default spill folder (``None`` here) is a fresh temporary folder removed after the run;
    ``""`` disables spilling.
    """
    limit = memory_limit or text(DUCKDB_MEMORY_LIMIT) or default_memory_limit()
    if temp_directory is None:
        temp_directory = text(DUCKDB_TEMP_DIR) or None
    return limit, None if temp_directory is None else str(temp_directory)


def duckdb_threads() -> int | None:
    """DuckDB's thread count from ``$LOOPEXP_DUCKDB_THREADS`` (None: DuckDB's default)."""
    return positive_int(DUCKDB_THREADS)


def spark_master() -> str:
    """The Spark master: ``$LOOPEXP_SPARK_MASTER`` or local mode on every core."""
    return text(SPARK_MASTER) or DEFAULT_SPARK_MASTER


def spark_partitions() -> str:
    """Spark's shuffle partitions (``$LOOPEXP_SPARK_PARTITIONS``, default 8: small jobs)."""
    return text(SPARK_PARTITIONS) or DEFAULT_SPARK_PARTITIONS


def lock_dir() -> Path:
    """Folder of loopexp's lock files (``$LOOPEXP_LOCK_DIR``, default: the system temp folder)."""
    folder = Path(text(LOCK_DIR) or Path(tempfile.gettempdir()) / "loopexp")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def stale_after_hours() -> float:
    """Hours after which a RUNNING run with no live process counts as abandoned."""
    try:
        return float(text(STALE_AFTER_HOURS) or DEFAULT_STALE_AFTER_HOURS)
    except ValueError:
        return DEFAULT_STALE_AFTER_HOURS


def keep_attempts() -> int:
    """Attempt folders kept per output folder (``$LOOPEXP_KEEP_ATTEMPTS``, default 30)."""
    raw = text(KEEP_ATTEMPTS)
    return int(raw) if raw.isdigit() else DEFAULT_KEEP_ATTEMPTS


def debug() -> bool:
    """True when ``$LOOPEXP_DEBUG`` is set: the CLI re-raises unexpected errors."""
    return bool(text(DEBUG))


def secret_list(name: str, *, commas: bool = True) -> list[str]:
    """A list of secrets from ``$NAME`` or the file ``$NAME_FILE`` (both may be set).

    Values are separated by newlines (and commas, unless ``commas`` is False: a password may
    hold one), so a key can rotate: the new one is added beside the old until every sender uses
    it. Empty when neither is set.
    """
    raw = text(name)
    path = text(name + "_FILE")
    if path:
        raw += "\n" + Path(path).read_text(encoding="utf-8")
    if commas:
        raw = raw.replace(",", "\n")
    return [v.strip() for v in raw.splitlines() if v.strip()]


def mandrill_webhook_url() -> str:
    """The public URL Mandrill signs (``$LOOPEXP_MANDRILL_WEBHOOK_URL``; ``""``: the request's)."""
    return text(MANDRILL_WEBHOOK_URL)


def collect_allow_unsigned() -> frozenset[str]:
    """Providers whose webhooks the receiver takes without a secret (``all`` for every one)."""
    names = text(COLLECT_ALLOW_UNSIGNED).split(",")
    return frozenset(v.strip().lower() for v in names if v.strip())


def collect_instance() -> str:
    """The receiver's instance id: ``$LOOPEXP_COLLECT_INSTANCE``, else the host name."""
    import socket  # noqa: PLC0415 (only the receiver needs it)

    return text(COLLECT_INSTANCE) or socket.gethostname()


def collect_out() -> str:
    """The receiver's output folder (``$LOOPEXP_COLLECT_OUT``), for an ASGI server's factory."""
    out = text(COLLECT_OUT)
    if not out:
        raise ConfigError(f"set {COLLECT_OUT} to the folder the receiver writes its segments to")
    return out


def collect_bucket() -> str:
    """Where the receiver ships sealed segments (``$LOOPEXP_COLLECT_BUCKET``; ``""``: nowhere)."""
    return text(COLLECT_BUCKET)


def lock_uri() -> str | None:
    """``$LOOPEXP_LOCK_URI``: the PostgreSQL whose advisory lock keeps one run per experiment."""
    return text(LOCK_URI) or None


def artifact_root() -> str | None:
    """``$LOOPEXP_ARTIFACT_ROOT``: where a database store's new experiments keep artifacts."""
    return text(ARTIFACT_ROOT) or None
