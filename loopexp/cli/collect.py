"""``loopexp collect``: the webhook receiver (``loopexp.collect``), served by uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def collect(
    out: Annotated[Path, typer.Option(help="folder of the raw log (sealed *.wlog segments)")],
    host: Annotated[str, typer.Option(help="address to bind (a reverse proxy in front)")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="port to bind")] = 8025,
    tolerance: Annotated[
        float, typer.Option(help="seconds a signed timestamp may differ from now")
    ] = 300.0,
    max_body_mb: Annotated[float, typer.Option(help="bodies over this are refused (413)")] = 16.0,
    segment_mb: Annotated[float, typer.Option(help="a segment is sealed at this size")] = 64.0,
    segment_seconds: Annotated[
        float, typer.Option(help="…or this long after it was opened (ingest reads sealed ones)")
    ] = 300.0,
    bucket: Annotated[
        str,
        typer.Option(
            help="s3://bucket/prefix to ship sealed segments to [$LOOPEXP_COLLECT_BUCKET]"
        ),
    ] = "",
) -> None:
    """Receive ESP webhooks: verify, store (fsync'd) before answering, for `loopexp ingest OUT`.

    Secrets come from the environment: LOOPEXP_SENDGRID_VERIFICATION_KEY,
    LOOPEXP_MAILGUN_SIGNING_KEY, LOOPEXP_SNS_TOPIC_ARNS, LOOPEXP_POSTMARK_BASIC_AUTH,
    LOOPEXP_MANDRILL_WEBHOOK_KEY (+ LOOPEXP_MANDRILL_WEBHOOK_URL), LOOPEXP_KLAVIYO_WEBHOOK_SECRET
    (each also as …_FILE). A provider without its secret is refused.
    """
    from loopexp.collect.app import serve  # noqa: PLC0415 (Starlette, uvicorn: fast --help)
    from loopexp.collect.settings import CollectSettings  # noqa: PLC0415

    settings = CollectSettings.from_env(
        out,
        tolerance_s=tolerance,
        max_body_bytes=int(max_body_mb * (1 << 20)),
        segment_bytes=int(segment_mb * (1 << 20)),
        segment_seconds=segment_seconds,
        **({"bucket": bucket} if bucket else {}),
    )
    serve(settings, host, port)
