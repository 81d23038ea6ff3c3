"""Request bodies: read within a size limit, then turned into a list of model items.

- ``application/json`` (or no content type): ``{"inputs": [item, ...]}``; MLflow's forms
  (``dataframe_split``, ``dataframe_records``, ``instances``, columnar ``inputs``) become
  records (objects), which the batcher gives the model as DataFrame rows;
- ``multipart/form-data``: every file part is one item (its raw bytes);
- a raw body (``image/*``, ``audio/*`` such as ``audio/wav``, ``application/dicom``,
  ``application/octet-stream``): one item (its bytes; speech models take WAV bytes).

Every problem is an ``HTTPException`` with a 4xx status and a one-line ``detail``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import HTTPException
from starlette.requests import ClientDisconnect, Request

from medml.serving.holder import one_line

RAW_TYPES = ("application/octet-stream", "application/dicom")
DRAIN_MAX_BYTES = 256 * 1024 * 1024  # read and drop at most this much of a refused body
DRAIN_MAX_S = 10.0


def too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"request body larger than the limit of {limit} bytes")


async def drain(receive, budget: int = DRAIN_MAX_BYTES, seconds: float = DRAIN_MAX_S) -> None:
    """Read and drop the rest of a refused body (bounded), so that the client, which is
    still sending, reads our 4xx instead of a reset connection. Nothing is kept."""
    deadline = time.monotonic() + seconds
    seen = 0
    while seen <= budget:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            msg = await asyncio.wait_for(receive(), remaining)
        except (TimeoutError, ClientDisconnect, OSError, RuntimeError):
            return
        if msg.get("type") != "http.request":
            return
        seen += len(msg.get("body", b""))
        if not msg.get("more_body", False):
            return


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` (from the
    Content-Length header, or while counting what arrives): never held in full."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HTTPException(400, "invalid Content-Length header") from None
        if size > limit:
            if size <= DRAIN_MAX_BYTES:
                await drain(request.receive)
            raise too_large(limit)
    buf = bytearray()
    while True:
        try:
            msg = await request.receive()
        except ClientDisconnect:
            raise HTTPException(400, "client disconnected while sending the body") from None
        if msg["type"] == "http.disconnect":
            raise HTTPException(400, "client disconnected while sending the body")
        buf += msg.get("body", b"")
        if len(buf) > limit:
            buf.clear()
            await drain(request.receive)
            raise too_large(limit)
        if not msg.get("more_body", False):
            return bytes(buf)


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """``type/subtype`` (lower case) and its parameters from a Content-Type header."""
    if not content_type:
        return "", {}
    head, *rest = content_type.split(";")
    params = {}
    for p in rest:
        k, _, v = p.strip().partition("=")
        if k:
            params[k.strip().lower()] = v.strip().strip('"')
    return head.strip().lower(), params


FORMATS = ("inputs", "instances", "dataframe_records", "dataframe_split")


def items_from_json(body: bytes) -> list:
    """The items of a JSON body: ``{"inputs": [...]}``; MLflow's scoring forms
    (``instances``, ``dataframe_records``, ``dataframe_split``, columnar ``inputs``) are
    read too, as records, so a client of ``mlflow models serve`` works unchanged."""
    import orjson

    if not body.strip():
        raise HTTPException(400, 'empty body; send JSON {"inputs": [...]}')
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, f"body is not valid JSON: {one_line(exc, 200)}") from None
    if not isinstance(doc, dict):
        raise HTTPException(422, 'JSON body must be an object {"inputs": [...]}')
    keys = [k for k in FORMATS if k in doc]
    if not keys:
        raise HTTPException(422, "missing field 'inputs' (a list of items to score)")
    if len(keys) > 1:
        raise HTTPException(422, f"give one of {', '.join(FORMATS)}, not {' and '.join(keys)}")
    key = keys[0]
    value = doc[key]
    if key == "dataframe_split":
        cols = value.get("columns") if isinstance(value, dict) else None
        data = value.get("data") if isinstance(value, dict) else None
        if not isinstance(cols, list) or not isinstance(data, list) or not all(
                isinstance(row, list) and len(row) == len(cols) for row in data):
            raise HTTPException(422, "'dataframe_split' needs 'columns' (a list) and 'data' "
                                     "(rows of the same length)")
        value = [dict(zip(cols, row, strict=True)) for row in data]
    elif key == "dataframe_records":
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            raise HTTPException(422, "'dataframe_records' must be a list of objects")
    elif isinstance(value, dict):  # columnar: {"col": [v1, v2], ...} -> records
        cols = list(value.values())
        if not value or not all(isinstance(c, list) for c in cols) \
                or len({len(c) for c in cols}) != 1:
            raise HTTPException(422, f"'{key}' as an object must map each column to a list, "
                                     "all of the same length")
        names = list(value)
        value = [dict(zip(names, row, strict=True)) for row in zip(*cols, strict=True)]
    if not isinstance(value, list):
        raise HTTPException(422, f"'{key}' must be a list, not {_json_type(value)}")
    if not value:
        raise HTTPException(422, f"'{key}' is empty")
    return value


def _json_type(v: Any) -> str:
    return {dict: "an object", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def items_from_multipart(body: bytes, params: dict[str, str]) -> list[bytes]:
    from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

    boundary = params.get("boundary")
    if not boundary:
        raise HTTPException(400, "multipart/form-data without a boundary parameter")
    decoder = MultipartDecoder(boundary.encode("latin-1", "replace"))
    files: list[bytes] = []
    part: bytearray | None = None
    is_file = False
    try:
        decoder.receive_data(body)
        decoder.receive_data(None)
        while True:
            event = decoder.next_event()
            if isinstance(event, File | Field):
                part, is_file = bytearray(), isinstance(event, File)
            elif isinstance(event, Data):
                if part is None:
                    raise ValueError("data before any part header")
                part += event.data
                if not event.more_data:
                    if is_file:
                        files.append(bytes(part))
                    part = None
            elif isinstance(event, Epilogue):
                break
            elif isinstance(event, NeedData):
                raise ValueError("the body ends before the closing boundary")
    except (ValueError, IndexError, KeyError) as exc:
        raise HTTPException(400, f"malformed multipart body: {one_line(exc, 200)}") from None
    except Exception as exc:  # werkzeug's own errors (e.g. RequestEntityTooLarge)
        raise HTTPException(400, f"malformed multipart body: {one_line(exc, 200)}") from None
    if not files:
        raise HTTPException(422, "the upload holds no file part; send files as "
                                 "multipart/form-data parts with a filename")
    return files


def parse_items(body: bytes, content_type: str | None) -> list:
    """The model items a request body holds (see the module docstring)."""
    mime, params = media_type(content_type)
    if mime in ("", "application/json") or mime.endswith("+json"):
        return items_from_json(body)
    if mime == "multipart/form-data":
        return items_from_multipart(body, params)
    if mime.startswith(("image/", "audio/")) or mime in RAW_TYPES:
        if not body:
            raise HTTPException(422, "empty upload (zero bytes); send the file's content")
        return [body]
    raise HTTPException(415, f"unsupported content type {mime!r}; send application/json, "
                             "multipart/form-data, a raw image (image/*, application/dicom) "
                             "or raw audio (audio/wav)")
