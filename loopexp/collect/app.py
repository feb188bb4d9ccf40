"""The receiver's ASGI app: one endpoint per provider, ``/healthz`` and Prometheus ``/metrics``.

``POST /webhooks/<provider>``: read the body (413 over the limit, 408 when it trickles in slower
than the read timeout), verify (401/403/406 as the provider acts on them, nothing stored, counted
by reason), append to the raw log and wait for its fsync, then 200. A storage failure answers 503
so the ESP retries. Serve it with ``loopexp collect`` or any ASGI server::

    uvicorn --factory loopexp.collect.app:from_env   # the output folder from LOOPEXP_COLLECT_OUT
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from loopexp.collect.bucket import BucketShipper
from loopexp.collect.segments import SegmentWriter, StorageError
from loopexp.collect.settings import CollectSettings, build_verifiers
from loopexp.collect.sns import Fetcher, https_fetch
from loopexp.collect.verify import Checked, RefusedError, Verifier
from loopexp.core import config
from loopexp.events import rawlog
from loopexp.events.adapters import webhooks

log = logging.getLogger(__name__)

#: Headers kept beside every stored body (besides what a verifier keeps to verify it again).
_KEEP = ("content-type", "user-agent", "x-amz-sns-message-id", "x-amz-sns-message-type")


class _Metrics:
    """The receiver's Prometheus series (a registry per app, so tests can read their own)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.accepted = Counter(
            "loopexp_webhook_accepted", "Requests stored and acknowledged", ["provider"], registry=r
        )
        self.rejected = Counter(
            "loopexp_webhook_rejected", "Requests refused", ["provider", "reason"], registry=r
        )
        self.bytes = Counter("loopexp_webhook_bytes", "Body bytes stored", ["provider"], registry=r)
        self.fsync = Histogram(
            "loopexp_webhook_fsync_seconds",
            "Duration of a group commit (write + fsync)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The whole body, else :class:`RefusedError`: 413 over ``limit``, 408 past ``timeout``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RefusedError("too_large", 413)

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RefusedError("too_large", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise RefusedError("read_timeout", 408) from None
    except ClientDisconnect:
        raise RefusedError("client_disconnect", 400) from None


class _Receiver:
    """``POST /webhooks/<provider>``: verify, store (fsync'd), then answer."""

    def __init__(
        self,
        settings: CollectSettings,
        verifiers: dict[str, Verifier],
        metrics: _Metrics,
        writer: SegmentWriter,
    ) -> None:
        self.settings = settings
        self.verifiers = verifiers
        self.metrics = metrics
        self.writer = writer

    async def webhook(self, request: Request) -> Response:
        """One webhook request."""
        provider = request.path_params["provider"]
        try:
            checked, headers, body = await self._check(request, provider)
        except RefusedError as refused:
            label = provider if provider in webhooks.PROVIDERS else "unknown"  # bounded labels
            self.metrics.rejected.labels(label, refused.reason).inc()
            return PlainTextResponse(refused.reason, refused.status)
        if checked.control:
            return PlainTextResponse("ok")
        kept = {k: headers[k] for k in _KEEP if k in headers}
        kept.update(checked.headers)
        try:
            await self.writer.append(rawlog.encode(provider, time.time(), kept, body))
        except StorageError as exc:
            log.error("%s", exc)
            self.metrics.rejected.labels(provider, "storage").inc()
            return PlainTextResponse("storage unavailable", 503, headers={"Retry-After": "60"})
        if checked.after_store is not None:  # e.g. Mailgun's token, fsync'd: off the loop
            try:
                await run_in_threadpool(checked.after_store)
            except OSError as exc:  # stored already: answer 200; a replay is deduped at ingest
                log.warning("%s: replay cache not updated (%s)", provider, exc)
        self.metrics.accepted.labels(provider).inc()
        self.metrics.bytes.labels(provider).inc(len(body))
        return PlainTextResponse("ok")

    async def _check(self, request: Request, provider: str) -> tuple[Checked, dict, bytes]:
        verifier = self.verifiers.get(provider)
        if verifier is None:
            known = provider in webhooks.PROVIDERS
            raise RefusedError("not_configured" if known else "unknown_provider", 404)
        limit, timeout = self.settings.max_body_bytes, self.settings.read_timeout_s
        body = await _read_body(request, limit, timeout)
        headers = {k.lower(): v for k, v in request.headers.items()}
        url = str(request.url)
        if provider == "ses":  # may fetch a certificate or confirm a subscription: off the loop
            checked = await run_in_threadpool(verifier.verify, headers, body, url)
        else:
            checked = verifier.verify(headers, body, url)
        return checked, headers, body


def create_app(settings: CollectSettings, *, fetch: Fetcher = https_fetch) -> Starlette:
    """The receiver for ``settings`` (``fetch``: how SNS certificates are fetched)."""
    verifiers: dict[str, Verifier] = build_verifiers(settings, fetch)
    metrics = _Metrics()
    shipper = BucketShipper(settings.bucket, settings.out) if settings.bucket else None
    writer = SegmentWriter(
        settings.out,
        settings.instance,
        max_bytes=settings.segment_bytes,
        max_age_s=settings.segment_seconds,
        fsync=settings.fsync,
        on_commit=lambda seconds, _n: metrics.fsync.observe(seconds),
        on_sealed=shipper.sealed if shipper is not None else None,
    )

    receiver = _Receiver(settings, verifiers, metrics, writer)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n" + "".join(f"{p}\n" for p in verifiers))

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        writer.start()
        if shipper is not None:
            shipper.start()
        log.info("storing webhooks of %s in %s", ", ".join(verifiers), settings.out)
        try:
            yield
        finally:
            await run_in_threadpool(writer.close)
            if shipper is not None:
                await run_in_threadpool(shipper.close)

    app = Starlette(
        routes=[
            Route("/webhooks/{provider}", receiver.webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.writer = writer
    app.state.metrics = metrics
    app.state.shipper = shipper
    return app


def from_env() -> Starlette:
    """The app of the environment's settings, for ``uvicorn --factory`` or gunicorn workers."""
    out = config.collect_out()
    return create_app(CollectSettings.from_env(Path(out)))


def serve(settings: CollectSettings, host: str = "127.0.0.1", port: int = 8025) -> None:
    """Serve the receiver with uvicorn until SIGINT/SIGTERM (then the open segment is sealed)."""
    import uvicorn  # noqa: PLC0415 (only the command that serves needs it)

    # a file-size limit must fail the write (EFBIG → 503, the ESP retries), not kill the receiver
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    # the receiver's own lines (unsigned warnings, refused providers, storage errors)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    app = create_app(settings)  # secrets checked before the port is bound
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=10,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
    )
