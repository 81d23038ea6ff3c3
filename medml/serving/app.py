"""The serving app: ``POST /predict``, ``GET /health``, ``GET /version``, OpenAPI docs.

    app = create_app(settings, "demo-imaging")          # ASGI app (tests, other servers)
    serve(settings, "demo-imaging", port=8080)          # blocking, uvicorn

Status codes: 200; 400 unreadable body (bad JSON, broken multipart); 401 missing or wrong
bearer token (when a token is set; ``/health`` and the docs stay open); 413 body over
``max_body_bytes`` or too many items; 415 unsupported content type; 422 a readable
body the model cannot score (missing ``inputs``, wrong shape, not an image); 503 no model
loaded yet. Every error body is ``{"detail": "<one line>"}``.
"""

from __future__ import annotations

import hmac
import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from medml import __version__
from medml.errors import BadInputError
from medml.serving.batcher import MicroBatcher, NoModelError, OutputMismatch
from medml.serving.holder import ModelHolder, one_line
from medml.serving.payload import DRAIN_MAX_BYTES, drain, parse_items, read_body, too_large
from medml.settings import Settings

log = logging.getLogger("medml.serving")

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_ITEMS = 1024
PARSE_IN_THREAD_BYTES = 256 * 1024  # parse bigger bodies off the event loop


# ---------------------------------------------------------------------- schemas (OpenAPI)
class PredictRequest(BaseModel):
    inputs: list[Any] | dict[str, list[Any]] = Field(
        ..., description="Items the model scores, one prediction each. Imaging: an image as "
        "a nested array ((H, W), (C, H, W) or (H, W, C); 0-1 or 0-255) or as base64-encoded "
        "PNG/JPEG/DICOM bytes. An object of equal-length columns is read as records. "
        "MLflow's scoring forms are accepted instead of `inputs`: `dataframe_split`, "
        "`dataframe_records`, `instances`.",
        examples=[["iVBORw0KGgo..."]])


class PredictResponse(BaseModel):
    model: str
    model_version: str = Field(..., description="the registry version that scored")
    predictions: list[Any] = Field(..., description="one record per input, in order "
                                   "(imaging: p_<class> probabilities and label)")


class VersionInfo(BaseModel):
    model: str
    alias: str
    model_version: str
    run_id: str
    data_version: str | None = Field(None, description="DVC content hash of the training data")
    dataset: str | None = None
    task: str | None = None
    git_commit: str | None = None
    flow_run_id: str | None = None
    model_uri: str
    loaded_at: str
    checked_at: str | None = Field(None, description="last time the alias was resolved")
    last_error: str | None = Field(None, description="why the alias' version is not served")
    medml_version: str


class Health(BaseModel):
    status: str
    model: str
    alias: str
    model_version: str | None = None
    detail: str | None = None


class ErrorDetail(BaseModel):
    detail: str


_ERRORS = {code: {"model": ErrorDetail, "description": why} for code, why in {
    400: "unreadable body (invalid JSON, broken multipart, bad Content-Length)",
    401: "missing or wrong bearer token",
    413: "body larger than the limit, or too many items",
    415: "unsupported content type",
    422: "readable body the model cannot score (missing 'inputs', wrong shape, not an image)",
    503: "no model loaded yet",
}.items()}


# ---------------------------------------------------------------------- middleware
class BodyLimit:
    """Refuse any request whose declared Content-Length exceeds the limit before routing
    (and before authentication), whatever the path. Streamed bodies are counted by
    ``read_body``."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            for key, value in scope.get("headers", ()):
                if key == b"content-length":
                    try:
                        size = int(value)
                    except ValueError:
                        break
                    if size > self.limit:
                        if size <= DRAIN_MAX_BYTES:
                            await drain(receive)
                        response = JSONResponse({"detail": too_large(self.limit).detail}, 413,
                                                headers={"Connection": "close"})
                        await response(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)


def _dumps(obj: Any) -> bytes:
    import orjson

    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY,
                        default=lambda o: o.item() if hasattr(o, "item") else str(o))


def _model_error(exc: Exception) -> HTTPException:
    """A failure of ``predict`` on a request's items, as a 4xx. Expected input errors are
    quiet; anything else is logged with its traceback (it may be a bug in the model)."""
    if isinstance(exc, HTTPException):
        return exc
    if isinstance(exc, NoModelError):
        return HTTPException(503, one_line(exc), headers={"Retry-After": "2"})
    if isinstance(exc, BadInputError):
        return HTTPException(422, one_line(exc))
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover
        MlflowException = ()  # noqa: N806
    if isinstance(exc, MlflowException):
        return HTTPException(422, f"input does not fit the model: {one_line(exc.message, 250)}")
    log.error("predict failed on a request's input (answered 422)", exc_info=exc)
    what = "model output" if isinstance(exc, OutputMismatch) else type(exc).__name__
    return HTTPException(422, f"the model cannot score this input ({what}: "
                              f"{one_line(exc, 200)})")


# ---------------------------------------------------------------------- app factory
def create_app(settings: Settings, name: str, *, alias: str = "champion",
               token: str | None = None, max_batch: int = 32, max_wait_ms: float = 5.0,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, poll_s: float = 2.0,
               max_items: int = DEFAULT_MAX_ITEMS) -> FastAPI:
    """The ASGI app serving ``name@alias`` from the settings' registry. The model loads in
    the background when the app starts (lifespan); until then ``/health`` answers 503."""
    holder = ModelHolder(settings, name, alias, poll_s=poll_s)
    batcher = MicroBatcher(holder, max_batch=max_batch, max_wait_ms=max_wait_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        holder.start(model_executor=batcher.executor)
        try:
            yield
        finally:
            holder.stop()
            await batcher.stop()

    app = FastAPI(
        title=f"MedML serving: {name}@{alias}", version=__version__, lifespan=lifespan,
        description=f"Serves `models:/{name}@{alias}` from the MLflow registry and follows "
                    "the alias: a promotion or a rollback changes the served version within "
                    f"about {poll_s:g} s plus the load time, without a restart. Concurrent "
                    f"requests are micro-batched (up to {max_batch} items). Bodies over "
                    f"{max_body_bytes} bytes are refused with 413.")
    app.state.holder = holder
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"detail": one_line(f"{where}: {first.get('msg', 'invalid')}")},
                            422)

    bearer = HTTPBearer(auto_error=False, description="the token given to `medml serve`")

    async def authorize(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if creds is None or not hmac.compare_digest(creds.credentials.encode(),
                                                    (token or "").encode()):
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(authorize)] if token else []

    @app.get("/health", response_model=Health, tags=["serving"],
             responses={503: {"model": Health, "description": "no model loaded yet"}})
    async def health() -> Any:
        """Ready (200) once a model is loaded; 503 before. Needs no token."""
        cur = holder.current
        if cur is None:
            return JSONResponse(Health(status="loading", model=name, alias=alias,
                                       detail=holder.status.last_error).model_dump(), 503,
                                headers={"Retry-After": "2"})
        return Health(status="ok", model=name, alias=alias, model_version=cur.version)

    @app.get("/version", response_model=VersionInfo, dependencies=guarded, tags=["serving"],
             responses={k: v for k, v in _ERRORS.items() if k in (401, 503)})
    async def version() -> Any:
        """The served version: registry version, alias, run id, data version and lineage."""
        cur = holder.current
        if cur is None:
            raise HTTPException(503, holder.status.last_error or "no model loaded yet",
                                headers={"Retry-After": "2"})
        return VersionInfo(**cur.info(), checked_at=holder.status.checked_at,
                           last_error=holder.status.last_error, medml_version=__version__)

    @app.post("/predict", dependencies=guarded, tags=["serving"], response_model=None,
              responses={200: {"model": PredictResponse, "description": "predictions"},
                         **_ERRORS},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": PredictRequest.model_json_schema()},
                  "multipart/form-data": {"schema": {
                      "type": "object", "properties": {"files": {
                          "type": "array", "items": {"type": "string", "format": "binary"},
                          "description": "one item per file part (imaging: PNG, JPEG "
                                         "or DICOM)"}}}},
                  "image/*": {"schema": {"type": "string", "format": "binary"}},
                  "application/dicom": {"schema": {"type": "string", "format": "binary"}},
                  "application/octet-stream": {"schema": {"type": "string",
                                                          "format": "binary"}},
              }}})
    async def predict(request: Request) -> Response:
        """Score items: JSON `{"inputs": [...]}`, a multipart upload of files, or one raw
        image body. Returns one prediction per item and the version that made them."""
        if holder.current is None:
            raise HTTPException(503, "no model loaded yet", headers={"Retry-After": "2"})
        batcher.arriving += 1
        try:
            body = await read_body(request, max_body_bytes)
            ctype = request.headers.get("content-type")
            if len(body) > PARSE_IN_THREAD_BYTES:
                from starlette.concurrency import run_in_threadpool

                items = await run_in_threadpool(parse_items, body, ctype)
            else:
                items = parse_items(body, ctype)
            del body
            if len(items) > max_items:
                raise HTTPException(413, f"{len(items)} items in one request; the limit is "
                                         f"{max_items}")
        finally:
            batcher.arriving -= 1
        try:
            records, served = await batcher.submit(items)
        except Exception as exc:
            raise _model_error(exc) from None
        return Response(_dumps({"model": name, "model_version": served,
                                "predictions": records}), media_type="application/json")

    return app


def serve(settings: Settings, name: str, *, alias: str = "champion", host: str = "127.0.0.1",
          port: int = 8080, token: str | None = None, max_batch: int = 32,
          max_wait_ms: float = 5.0, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
          poll_s: float = 2.0, log_level: str = "info", access_log: bool = False) -> None:
    """Serve ``name@alias`` over HTTP until interrupted (blocking)."""
    import uvicorn

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("medml").setLevel(logging.INFO)
    app = create_app(settings, name, alias=alias, token=token, max_batch=max_batch,
                     max_wait_ms=max_wait_ms, max_body_bytes=max_body_bytes, poll_s=poll_s)
    log.info("serving %s@%s on http://%s:%d (docs at /docs)%s", name, alias, host, port,
                ", bearer token required" if token else "")
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log,
                server_header=False, timeout_graceful_shutdown=5)
