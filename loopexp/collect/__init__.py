"""``loopexp collect``: the webhook receiver that verifies, stores before it answers, loses nothing.

``app`` (the Starlette ASGI app and its endpoints), ``verify`` / ``sns`` (each provider's signature
scheme), ``replay`` (Mailgun's token cache), ``segments`` (the fsync'd, rotated, atomically sealed
raw log that :mod:`loopexp.events.rawlog` reads back for ingest), ``settings`` (secrets and limits).
Starlette and uvicorn are imported only here.
"""
