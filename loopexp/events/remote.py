"""Raw-log segments in an S3-compatible bucket, fetched for ingest (``loopexp ingest s3://b/p``).

Receivers with a bucket (``loopexp collect --bucket``) upload their sealed segments there; ingest
downloads every ``*.wlog`` under the prefix into a temporary folder and reads them like a local
raw log. boto3 is imported only when a path is an ``s3://`` URL; the endpoint of an S3-compatible
store comes from boto3's configuration (``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from loopexp.events.rawlog import SEALED
from loopexp.events.reader import IngestError


def is_remote(path: str | Path) -> bool:
    """An ``s3://`` URL (a Path would have collapsed its ``//``: strings only)."""
    return isinstance(path, str) and path.startswith("s3://")


def localize(paths: list[str | Path]) -> tuple[list[str | Path], Path | None]:
    """``paths`` with each ``s3://`` URL replaced by a local folder of its segments.

    Returns the paths and the temporary folder to remove afterwards (None when nothing remote).
    """
    if not any(is_remote(p) for p in paths):
        return paths, None
    try:
        import boto3  # noqa: PLC0415 (only ingest of a bucket needs it)
        import botocore.exceptions  # noqa: PLC0415
    except ImportError:
        raise IngestError("reading s3:// needs boto3: pip install 'loopexp[s3]'") from None

    folder = Path(tempfile.mkdtemp(prefix="loopexp-bucket-"))
    client = boto3.client("s3")
    out: list[str | Path] = []
    for i, item in enumerate(paths):
        if not is_remote(item):
            out.append(item)
            continue
        parts = urlsplit(str(item))
        bucket, prefix = parts.netloc, parts.path.strip("/")
        target = folder / str(i)
        target.mkdir()
        try:
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"].rsplit("/", 1)[-1]
                    if name.endswith(SEALED):
                        client.download_file(bucket, obj["Key"], str(target / name))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise IngestError(
                f"{item}: cannot read the bucket ({exc}); check the URL, the credentials and "
                "AWS_ENDPOINT_URL for an S3-compatible store"
            ) from None
        if not any(target.iterdir()):
            raise IngestError(f"{item}: no sealed segment (*{SEALED}) under this prefix")
        out.append(target)
    return out, folder
