"""Sealed segments shipped to an S3-compatible bucket, so receivers keep no state of their own.

A request is acknowledged once its record is fsync'd on local disk (an object store put per
request would cost a round trip each); each sealed segment is then uploaded by this thread to
``s3://bucket/prefix/<segment name>`` (names carry instance and process ids, so receivers never
overwrite each other: no coordination needed), checked by size, and only then removed locally. A
failed upload stays on disk and is retried (and at the next start), so nothing acknowledged
depends on the bucket being up. ``loopexp ingest s3://bucket/prefix`` reads them all back.

The endpoint of an S3-compatible store (MinIO, moto) comes from boto3's own configuration
(``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``, credentials and region as usual).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from urllib.parse import urlsplit

from loopexp.core.errors import ConfigError
from loopexp.events import rawlog

log = logging.getLogger(__name__)

#: Seconds between retries of a failed upload.
RETRY_S = 10.0


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix without slashes at the ends)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(f"bucket {url!r} is not an s3://bucket/prefix URL")
    return parts.netloc, parts.path.strip("/")


class BucketShipper:
    """Uploads sealed segments of ``folder`` to the bucket, then deletes the local copies."""

    def __init__(self, url: str, folder: str | Path, client: object | None = None) -> None:
        self.bucket, self.prefix = parse_url(url)
        self.folder = Path(folder)
        self._client = client
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def client(self):
        """The boto3 S3 client (created on first use: boto3 loads in the receiver only)."""
        if self._client is None:
            try:
                import boto3  # noqa: PLC0415 (only a receiver with a bucket needs it)
            except ImportError:
                raise ConfigError("a bucket needs boto3: pip install 'loopexp[s3]'") from None

            self._client = boto3.client("s3")
        return self._client

    def key(self, path: Path) -> str:
        """The object key of a segment."""
        return f"{self.prefix}/{path.name}" if self.prefix else path.name

    def start(self) -> None:
        """Ship what is sealed already (an earlier run's), then whatever is sealed next."""
        self._thread = threading.Thread(target=self._run, name="loopexp-bucket", daemon=True)
        self._thread.start()
        self._wake.set()

    def sealed(self, path: Path) -> None:
        """A segment was sealed: ship it soon."""
        self._wake.set()

    def close(self) -> None:
        """One last pass, then stop (what fails stays on disk for the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def ship_all(self) -> list[Path]:
        """Upload every sealed segment of the folder; the ones that failed."""
        failed = []
        for path in sorted(self.folder.glob(f"*{rawlog.SEALED}")):
            try:
                self.ship(path)
            except Exception as exc:
                log.warning("segment %s not uploaded yet (%s); retrying", path.name, exc)
                failed.append(path)
        return failed

    def ship(self, path: Path) -> None:
        """Upload one segment, check its size in the bucket, delete the local copy."""
        key = self.key(path)
        size = path.stat().st_size
        client = self.client()
        client.upload_file(str(path), self.bucket, key)
        head = client.head_object(Bucket=self.bucket, Key=key)
        if int(head["ContentLength"]) != size:
            raise OSError(
                f"s3://{self.bucket}/{key} holds {head['ContentLength']} bytes, not {size}"
            )
        path.unlink()

    def _run(self) -> None:
        while True:
            self._wake.wait(RETRY_S)
            self._wake.clear()
            failed = self.ship_all()
            if self._stop.is_set():
                if failed:
                    log.error(
                        "%d segment(s) left in %s for the next start", len(failed), self.folder
                    )
                return
