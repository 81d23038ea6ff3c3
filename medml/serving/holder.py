"""The served model: ``NAME@alias`` resolved in the registry, loaded, and swapped when the
alias moves (a promotion or a rollback), with no restart.

A daemon thread asks the registry every ``poll_s`` seconds which version the alias names.
A new version is downloaded, loaded and warmed up (its own input example) in that thread
while the old one keeps serving; then one reference assignment swaps it in, so a request
sees either the old model or the new one, never a half-loaded one. A version that fails to
load or to score its input example is not swapped in (the old one keeps serving and
``/version`` says why); it is retried after ``retry_s``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medml.settings import Settings

log = logging.getLogger("medml.serving")

LINEAGE_TAGS = ("git_commit", "dvc_data_hash", "dataset", "task", "flow_run_id")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def one_line(text: Any, limit: int = 300) -> str:
    """``text`` as one short line (for ``detail`` fields and log lines)."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[:limit - 3] + "..."


def _settle_gc() -> None:
    """After a (re)load: collect once, then freeze what is left (the libraries and the
    model) out of the cyclic collector. Without this, full collections walk millions of
    long-lived objects (MLflow, pandas, PyTorch) while requests wait: pauses of 50-250 ms
    that made the p99 latency under load. Costs one such pause per model swap."""
    import gc

    gc.unfreeze()
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class LoadedModel:
    """One loaded registry version; immutable, swapped as a whole."""

    name: str
    alias: str
    version: str
    run_id: str
    tags: dict[str, str]
    model: Any  # mlflow.pyfunc.PyFuncModel
    input_column: str | None  # the one named input column of the signature, if any
    loaded_at: str
    path: str = ""

    def info(self) -> dict[str, Any]:
        t = self.tags
        return {"model": self.name, "alias": self.alias, "model_version": self.version,
                "run_id": self.run_id, "data_version": t.get("dvc_data_hash") or None,
                "dataset": t.get("dataset") or None, "task": t.get("task") or None,
                "git_commit": t.get("git_commit") or None,
                "flow_run_id": t.get("flow_run_id") or None,
                "model_uri": f"models:/{self.name}/{self.version}",
                "loaded_at": self.loaded_at}


@dataclass
class _Status:
    checked_at: str | None = None
    last_error: str | None = None
    failed: dict[str, float] = field(default_factory=dict)  # version -> monotonic time


class ModelHolder:
    """Holds ``current`` (a LoadedModel, or None until the first load) and follows the alias."""

    def __init__(self, settings: Settings, name: str, alias: str = "champion",
                 poll_s: float = 2.0, retry_s: float = 30.0, warm_up: bool = True,
                 freeze_gc: bool = True) -> None:
        self.settings = settings
        self.name = name
        self.alias = alias
        self.poll_s = poll_s
        self.retry_s = retry_s
        self.warm_up = warm_up
        self.freeze_gc = freeze_gc
        self.current: LoadedModel | None = None
        self.status = _Status()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None
        self._workdir: Path | None = None
        self._lock = threading.Lock()  # one refresh at a time (poll thread, tests)
        self._model_executor: Executor | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, model_executor: Executor | None = None) -> None:
        """Start following the alias. ``model_executor``: the one thread that runs the
        model (the batcher's); the warm-up call runs there too."""
        if self._thread is not None:
            return
        self._model_executor = model_executor
        self._stop.clear()
        self._workdir = Path(tempfile.mkdtemp(prefix="medml-serve-"))
        self._thread = threading.Thread(target=self._run, name="medml-model-poll", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # never let the poll thread die
                log.exception("serving %s@%s: refresh failed", self.name, self.alias)
            self._stop.wait(self.poll_s)

    # ------------------------------------------------------------------ polling
    def _registry(self):
        if self._client is None:
            import mlflow

            # read only: the URIs load_model resolves with (no experiment is created)
            mlflow.set_tracking_uri(self.settings.mlflow_uri)
            mlflow.set_registry_uri(self.settings.mlflow_uri)
            self._client = mlflow.MlflowClient(self.settings.mlflow_uri,
                                               self.settings.mlflow_uri)
        return self._client

    def _error(self, message: str) -> None:
        if message != self.status.last_error:  # log each new problem once, not every poll
            log.warning("serving %s@%s: %s", self.name, self.alias, message)
        self.status.last_error = message

    def refresh(self) -> bool:
        """Ask the registry once; load and swap in a new version. True when it swapped."""
        with self._lock:
            try:
                mv = self._registry().get_model_version_by_alias(self.name, self.alias)
            except Exception as exc:
                self._error(f"cannot resolve {self.name}@{self.alias}: {one_line(exc, 200)}")
                return False
            self.status.checked_at = _now()
            version = str(mv.version)
            cur = self.current
            if cur is not None and cur.version == version:
                if self.status.last_error and self.status.last_error.startswith("cannot resolve"):
                    self.status.last_error = None
                return False
            failed_at = self.status.failed.get(version)
            if failed_at is not None and time.monotonic() - failed_at < self.retry_s:
                return False
            try:
                loaded = self._load_in_thread(mv)
            except Exception as exc:
                self.status.failed[version] = time.monotonic()
                log.exception("serving %s@%s: version %s could not be loaded", self.name,
                              self.alias, version)
                self._error(f"version {version} not loaded ({type(exc).__name__}: "
                            f"{one_line(exc, 200)}); still serving "
                            f"{'version ' + cur.version if cur else 'nothing'}")
                return False
            self.current = loaded  # the swap: one reference assignment
            self.status.failed.pop(version, None)
            self.status.last_error = None
            log.info("serving %s version %s (run %s)%s", self.name, version, mv.run_id,
                        f", was version {cur.version}" if cur else "")
            self._cleanup(keep={loaded.path, cur.path if cur else ""})
            cur = None
            if self.freeze_gc:
                _settle_gc()
            return True

    def _load_in_thread(self, mv) -> LoadedModel:
        """Load in a short-lived thread. PyTorch's OpenMP keeps a team of threads per
        calling thread for as long as that thread lives; a long-lived second team (here,
        the poll thread's) competes with the predict thread's for the cores and made
        single-item predictions ~1.5x slower on 2 cores."""
        out: dict[str, Any] = {}

        def work() -> None:
            try:
                out["loaded"] = self._load(mv)
            except BaseException as exc:  # handed to the caller
                out["error"] = exc

        thread = threading.Thread(target=work, name="medml-model-load", daemon=True)
        thread.start()
        thread.join()
        if "error" in out:
            raise out["error"]
        return out["loaded"]

    def _on_model_thread(self, fn, *args) -> Any:
        if self._model_executor is None:
            return fn(*args)
        return self._model_executor.submit(fn, *args).result()

    def _load(self, mv) -> LoadedModel:
        import mlflow
        from mlflow.models import Model

        self._registry()
        dest = (self._workdir or Path(tempfile.mkdtemp(prefix="medml-serve-"))) / (
            f"v{mv.version}-{int(time.time() * 1000)}")
        dest.mkdir(parents=True)
        local = mlflow.artifacts.download_artifacts(f"models:/{self.name}/{mv.version}",
                                                    dst_path=str(dest))
        model = mlflow.pyfunc.load_model(local)
        schema = model.metadata.get_input_schema()
        column = None
        if schema is not None and not schema.is_tensor_spec() and schema.has_input_names():
            names = schema.input_names()
            column = names[0] if len(names) == 1 else None
        if self.warm_up:  # first call pays torch's lazy set-up; also proves the model scores
            example = Model.load(local).load_input_example(local)
            if example is not None:
                self._on_model_thread(model.predict, example)
        return LoadedModel(name=self.name, alias=self.alias, version=str(mv.version),
                           run_id=mv.run_id or "", tags=dict(mv.tags or {}), model=model,
                           input_column=column, loaded_at=_now(), path=str(dest))

    def _cleanup(self, keep: set[str]) -> None:
        """Remove downloaded versions other than the current and the previous one."""
        if self._workdir is None:
            return
        for child in self._workdir.iterdir():
            if str(child) not in keep:
                shutil.rmtree(child, ignore_errors=True)
