"""`medml serve`: a real uvicorn server (thread, loopback) on a real MLflow store with a
tiny model trained and registered by the lifecycle functions; real HTTP with httpx."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medml import lifecycle, registry
from medml.serving import create_app
from medml.settings import Settings
from tests.conftest import module_settings

MODEL = "serve-model"
LIMIT = 2 * 1024 * 1024  # the test server's body limit


# ---------------------------------------------------------------------- fixtures
def two_versions(s: Settings) -> Settings:
    """Two registered versions of one tiny imaging model in ``s``; champion -> version 1."""
    lifecycle.create_dataset(s, "imaging", "demo", seed=0)
    run = lifecycle.open_run(s, "demo")
    trained = lifecycle.train(run, progress=False)
    evaluated = lifecycle.evaluate(run, trained)
    v1 = lifecycle.register(run, MODEL, evaluated, trained)
    v2 = lifecycle.register(run, MODEL, evaluated, trained)
    assert (v1, v2) == ("1", "2")
    registry.set_alias(s, MODEL, "champion", v1, who="test", why="serving test")
    return s


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The module's store, never changed by a test (tests that move aliases or add
    versions use a store of their own, or an alias of their own removed afterwards)."""
    return two_versions(module_settings(tmp_path_factory, "serving"))


class Server:
    """uvicorn in a thread on a socket bound to a free loopback port."""

    def __init__(self, app) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)
        self.thread.start()

    def wait_ready(self, headers: dict | None = None, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", headers=headers, timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("server did not become ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


@pytest.fixture(scope="module")
def server(store: Settings):
    srv = Server(create_app(store, MODEL, max_body_bytes=LIMIT, poll_s=0.5))
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(server: Server):
    with httpx.Client(base_url=server.url, timeout=60,
                      limits=httpx.Limits(max_connections=32)) as c:
        yield c


@pytest.fixture(scope="module")
def images(store: Settings) -> list[np.ndarray]:
    folder = store.data_dir / "demo" / "images"
    return [np.load(p) for p in sorted(folder.glob("*.npy"))[:6]]


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((arr[0] * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def probs(records: list[dict]) -> np.ndarray:
    return np.array([[v for k, v in r.items() if k.startswith("p_")] for r in records])


# ---------------------------------------------------------------------- tests
def test_health_version_and_docs(client: httpx.Client, store: Settings) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() | {} == {"status": "ok", "model": MODEL, "alias": "champion",
                                  "model_version": "1", "detail": None}
    mv = registry.resolve(store, f"{MODEL}@champion")
    info = client.get("/version").json()
    assert info["model"] == MODEL and info["alias"] == "champion"
    assert info["model_version"] == "1" and info["run_id"] == mv.run_id
    assert info["data_version"] == mv.tags["dvc_data_hash"] != ""
    assert info["dataset"] == "demo" and info["task"] == "imaging"
    assert info["git_commit"] == mv.tags["git_commit"]
    assert info["model_uri"] == f"models:/{MODEL}/1" and info["last_error"] is None

    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert {"200", "413", "415", "422"} <= set(spec["paths"]["/predict"]["post"]["responses"])
    assert {"/health", "/version"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_predict_json_and_upload_equal_the_pyfunc(client: httpx.Client, store: Settings,
                                                  images: list[np.ndarray]) -> None:
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(store.mlflow_uri)
    mlflow.set_registry_uri(store.mlflow_uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/1")
    pngs = [png(a) for a in images]
    dicom = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    expected = model.predict(pd.DataFrame({"image": [a.tolist() for a in images]}))
    expected_png = probs(model.predict(pd.DataFrame({"image": pngs + [dicom]}))
                         .to_dict("records"))

    r = client.post("/predict", json={"inputs": [a.tolist() for a in images]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"] == MODEL and out["model_version"] == "1"
    assert len(out["predictions"]) == len(images)
    assert [p["label"] for p in out["predictions"]] == expected["label"].tolist()
    np.testing.assert_allclose(probs(out["predictions"]),
                               probs(expected.to_dict("records")), atol=1e-5)

    r = client.post("/predict", json={"inputs": [b64(p) for p in pngs] + [b64(dicom)]})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(probs(r.json()["predictions"]), expected_png, atol=1e-5)

    files = [("files", (f"{i}.png", p, "image/png")) for i, p in enumerate(pngs)]
    files.append(("files", ("ct.dcm", dicom, "application/dicom")))
    r = client.post("/predict", files=files, data={"note": "a text field is ignored"})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(probs(r.json()["predictions"]), expected_png, atol=1e-5)

    r = client.post("/predict", content=pngs[0], headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(probs(r.json()["predictions"]), expected_png[:1], atol=1e-5)

    # MLflow's scoring forms are accepted as well (a client of `mlflow models serve`).
    one = b64(pngs[0])
    for doc in ({"inputs": {"image": [one]}}, {"dataframe_records": [{"image": one}]},
                {"dataframe_split": {"columns": ["image"], "data": [[one]]}},
                {"instances": [{"image": one}]}):
        r = client.post("/predict", json=doc)
        assert r.status_code == 200, (doc, r.text)
        np.testing.assert_allclose(probs(r.json()["predictions"]), expected_png[:1], atol=1e-5)


def bad_requests(images: list[np.ndarray]) -> dict[str, tuple[dict, int]]:
    """Name -> (httpx request arguments, expected status)."""
    good = images[0]
    return {
        "not json": ({"content": b"{not json", "headers": {"content-type": "application/json"}},
                     400),
        "empty body": ({"content": b"", "headers": {"content-type": "application/json"}}, 400),
        "missing inputs": ({"json": {"input": [good.tolist()]}}, 422),
        "two forms": ({"json": {"inputs": [good.tolist()], "instances": [good.tolist()]}},
                      422),
        "bad dataframe_split": ({"json": {"dataframe_split": {"columns": ["image"]}}}, 422),
        "record without column": ({"json": {"dataframe_records": [{"pixels": 1}]}}, 422),
        "empty object": ({"json": {}}, 422),
        "not an object": ({"json": [good.tolist()]}, 422),
        "inputs not a list": ({"json": {"inputs": 5}}, 422),
        "inputs empty": ({"json": {"inputs": []}}, 422),
        "wrong shape": ({"json": {"inputs": [[1.0, 2.0, 3.0]]}}, 422),
        "wrong shape 4d": ({"json": {"inputs": [np.zeros((2, 2, 8, 8)).tolist()]}}, 422),
        "ragged array": ({"json": {"inputs": [[[0.1, 0.2], [0.3]]]}}, 422),
        "text array": ({"json": {"inputs": [[["a", "b"], ["c", "d"]]]}}, 422),
        "not base64": ({"json": {"inputs": ["this is not base64!"]}}, 422),
        "base64 not an image": ({"json": {"inputs": [b64(b"hello, world")]}}, 422),
        "null item": ({"json": {"inputs": [None]}}, 422),
        "object item": ({"json": {"inputs": [{"pixels": 1}]}}, 422),
        "upload not an image": ({"files": [("file", ("x.png", b"plain text", "image/png"))]},
                                422),
        "upload no file": ({"files": [("f", (None, b"just a field"))]}, 422),
        "raw not an image": ({"content": b"\x00" * 100,
                              "headers": {"content-type": "application/octet-stream"}}, 422),
        "broken multipart": ({"content": b"--xyz\r\nContent-Disposition: form-data; name=f",
                              "headers": {"content-type": "multipart/form-data; boundary=xyz"}},
                             400),
        "multipart no boundary": ({"content": b"abc",
                                   "headers": {"content-type": "multipart/form-data"}}, 400),
        "unsupported type": ({"content": b"hello", "headers": {"content-type": "text/plain"}},
                             415),
        "50 MB body": ({"content": b"0" * (50 * 1024 * 1024),
                        "headers": {"content-type": "application/json"}}, 413),
        "too large streamed": ({"content": (b"x" * 65536 for _ in range(64)),
                                "headers": {"content-type": "application/json"}}, 413),
    }


def test_bad_payloads_are_4xx(client: httpx.Client, images: list[np.ndarray]) -> None:
    for name, (kwargs, status) in bad_requests(images).items():
        r = client.post("/predict", **kwargs)
        assert r.status_code == status, (name, r.status_code, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and detail, name
    # a bad item next to good ones fails its own request only (batched with others)
    good = {"json": {"inputs": [images[1].tolist()]}}
    bad = {"json": {"inputs": [[1.0, 2.0]]}}
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda kw: client.post("/predict", **kw).status_code,
                              [good, bad] * 16))
    assert codes == [200, 422] * 16


def test_1000_mixed_requests_no_5xx(client: httpx.Client, images: list[np.ndarray]) -> None:
    bad = bad_requests(images)
    big = bad.pop("50 MB body")
    bad.pop("too large streamed")  # a generator is consumed once
    valid = [({"json": {"inputs": [a.tolist()]}}, 200) for a in images]
    valid += [({"json": {"inputs": [b64(png(a))]}}, 200) for a in images]
    valid += [({"files": [("file", ("a.png", png(a), "image/png"))]}, 200) for a in images]
    kinds = valid + list(bad.values())
    rng = np.random.default_rng(0)
    plan = [kinds[i] for i in rng.integers(0, len(kinds), 1000 - 10)] + [big] * 10
    plan = [plan[i] for i in rng.permutation(len(plan))]

    def send(case: tuple[dict, int]) -> tuple[int, int]:
        kwargs, expected = case
        return client.post("/predict", **kwargs).status_code, expected

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, plan))
    statuses = Counter(code for code, _ in results)
    assert len(results) == 1000
    assert sum(n for code, n in statuses.items() if code >= 500) == 0, statuses
    assert all(code == expected for code, expected in results), statuses
    assert client.get("/health").status_code == 200
    r = client.post("/predict", json={"inputs": [images[0].tolist()]})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1


def test_bearer_token(store: Settings, images: list[np.ndarray]) -> None:
    srv = Server(create_app(store, MODEL, token="s3cret", poll_s=30))
    try:
        srv.wait_ready()
        payload = {"inputs": [images[0].tolist()]}
        assert httpx.get(f"{srv.url}/health").status_code == 200  # stays open
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                        {"Authorization": "Basic czNjcmV0"}):
            r = httpx.post(f"{srv.url}/predict", json=payload, headers=headers)
            assert r.status_code == 401, headers
            assert r.headers["www-authenticate"] == "Bearer"
            assert httpx.get(f"{srv.url}/version", headers=headers).status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert httpx.post(f"{srv.url}/predict", json=payload, headers=ok).status_code == 200
        assert httpx.get(f"{srv.url}/version", headers=ok).json()["model_version"] == "1"
        spec = httpx.get(f"{srv.url}/openapi.json").json()
        assert "HTTPBearer" in spec["components"]["securitySchemes"]
    finally:
        srv.stop()


def _wait_version(client: httpx.Client, version: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = client.get("/version").json()
        if info["model_version"] == version or time.monotonic() > deadline:
            return info
        time.sleep(0.2)


def test_follows_the_alias_without_restart(settings: Settings) -> None:
    store = two_versions(settings)  # its own store: this test moves the champion alias
    image = np.load(sorted((store.data_dir / "demo" / "images").glob("*.npy"))[0])
    payload = {"inputs": [image.tolist()]}
    srv = Server(create_app(store, MODEL, poll_s=0.5))
    try:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            assert client.post("/predict", json=payload).json()["model_version"] == "1"
            registry.set_alias(store, MODEL, "champion", "2", who="test", why="promotion")
            info = _wait_version(client, "2")
            assert info["model_version"] == "2" and info["alias"] == "champion", info
            assert client.post("/predict", json=payload).json()["model_version"] == "2"
            assert client.get("/health").json()["model_version"] == "2"

            registry.rollback(store, MODEL, who="test", why="serving test")
            assert _wait_version(client, "1")["model_version"] == "1"
            assert client.post("/predict", json=payload).json()["model_version"] == "1"

            # the alias pointing nowhere: the last version keeps serving, /version says why
            store_client = registry.client_for(store)
            store_client.delete_registered_model_alias(MODEL, "champion")
            deadline = time.monotonic() + 15
            while (client.get("/version").json()["last_error"] is None
                   and time.monotonic() < deadline):
                time.sleep(0.2)
            info = client.get("/version").json()
            assert info["model_version"] == "1" and "champion" in info["last_error"]
            assert client.post("/predict", json=payload).status_code == 200
    finally:
        srv.stop()


@contextlib.contextmanager
def own_alias(store: Settings, alias: str):
    """An alias of the module's store that only this test uses; removed afterwards (set with
    the client, so the alias history stays as it was)."""
    store_client = registry.client_for(store)
    try:
        yield store_client
    finally:
        with contextlib.suppress(Exception):
            store_client.delete_registered_model_alias(MODEL, alias)


def _wait(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_health_is_503_until_a_model_is_loaded(store: Settings,
                                               images: list[np.ndarray]) -> None:
    with own_alias(store, "canary") as store_client:
        srv = Server(create_app(store, MODEL, alias="canary", poll_s=0.2))
        try:
            def answered() -> httpx.Response | None:
                try:
                    r = httpx.get(f"{srv.url}/health", timeout=5)
                except httpx.TransportError:
                    return None
                return r if r.json()["detail"] else None  # the alias has been asked for

            health = _wait(answered, what="a first /health answer")
            assert health.status_code == 503, health.text
            body = health.json()
            assert body["status"] == "loading" and body["model_version"] is None
            assert "canary" in body["detail"], body
            payload = {"inputs": [images[0].tolist()]}
            assert httpx.post(f"{srv.url}/predict", json=payload).status_code == 503
            assert httpx.get(f"{srv.url}/version").status_code == 503

            store_client.set_registered_model_alias(MODEL, "canary", "1")
            srv.wait_ready()
            health = httpx.get(f"{srv.url}/health")
            assert health.status_code == 200
            assert health.json()["model_version"] == "1" and health.json()["status"] == "ok"
            assert httpx.post(f"{srv.url}/predict", json=payload).status_code == 200
        finally:
            srv.stop()


def test_a_version_that_fails_to_load_is_not_swapped_in(store: Settings, tmp_path: Path,
                                                         images: list[np.ndarray]) -> None:
    import shutil
    from urllib.parse import unquote, urlparse

    store_client = registry.client_for(store)
    good = store_client.get_model_version(MODEL, "1")
    # a copy of version 1's model in the artifact store, its bundle cut in half
    src = Path(unquote(urlparse(store_client.get_model_version_download_uri(MODEL, "1")).path))
    broken = store.artifact_root / f"broken-{tmp_path.name}"
    shutil.copytree(src, broken)
    bundle = next(broken.rglob("bundle.pt"))
    bundle.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    bad = store_client.create_model_version(MODEL, broken.as_uri(), run_id=good.run_id)
    payload = {"inputs": [images[0].tolist()]}
    try:
        with own_alias(store, "canary-broken"):
            store_client.set_registered_model_alias(MODEL, "canary-broken", "1")
            srv = Server(create_app(store, MODEL, alias="canary-broken", poll_s=0.2))
            try:
                srv.wait_ready()
                store_client.set_registered_model_alias(MODEL, "canary-broken", bad.version)
                info = _wait(lambda: (i := httpx.get(f"{srv.url}/version").json())
                             ["last_error"] and i, what="the failed load to be reported")
                assert info["model_version"] == "1", info
                assert f"version {bad.version} not loaded" in info["last_error"], info
                assert "still serving version 1" in info["last_error"], info
                health = httpx.get(f"{srv.url}/health")
                assert health.status_code == 200 and health.json()["model_version"] == "1"
                r = httpx.post(f"{srv.url}/predict", json=payload, timeout=60)
                assert r.status_code == 200 and r.json()["model_version"] == "1", r.text
            finally:
                srv.stop()
    finally:
        store_client.delete_model_version(MODEL, bad.version)
        shutil.rmtree(broken, ignore_errors=True)


def test_concurrent_requests_are_scored_in_fewer_model_calls(
        store: Settings, images: list[np.ndarray]) -> None:
    app = create_app(store, MODEL, max_batch=64, max_wait_ms=100, poll_s=60)
    srv = Server(app)
    try:
        srv.wait_ready()
        loaded = app.state.holder.current
        calls: list[int] = []
        original = loaded.model.predict

        def counting(data, *args, **kwargs):
            calls.append(len(data))
            return original(data, *args, **kwargs)

        loaded.model.predict = counting  # this server's own loaded model
        n = 32
        work = [images[i % len(images)] for i in range(n)]
        with httpx.Client(base_url=srv.url, timeout=60,
                          limits=httpx.Limits(max_connections=n)) as c:
            alone = [c.post("/predict", json={"inputs": [a.tolist()]}).json()
                     for a in images]  # one at a time: one call each
            assert calls == [1] * len(images), calls
            calls.clear()
            barrier = threading.Barrier(n)

            def send(arr: np.ndarray) -> httpx.Response:
                barrier.wait()
                return c.post("/predict", json={"inputs": [arr.tolist()]})

            with ThreadPoolExecutor(n) as pool:
                answers = list(pool.map(send, work))
        assert [r.status_code for r in answers] == [200] * n
        assert sum(calls) == n, calls  # every item scored once ...
        assert len(calls) < n and max(calls) > 1, calls  # ... in fewer, batched, calls
        for i, r in enumerate(answers):  # each request got its own rows back
            expected = alone[i % len(images)]["predictions"]
            np.testing.assert_allclose(probs(r.json()["predictions"]), probs(expected),
                                       atol=1e-5)
    finally:
        srv.stop()


def test_medml_serve_takes_the_token_from_the_environment(store: Settings, tmp_path: Path,
                                                          images: list[np.ndarray]) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import free_port
    from tests.test_cli import _env, _params

    env = _env(store, _params(store, tmp_path))
    env["MEDML_SERVE_TOKEN"] = "from-env-token"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "medml.cli", "serve", MODEL, "--port",
                             str(port), "--poll-s", "60"], cwd=store.workspace, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        def ready() -> bool:
            assert proc.poll() is None, "medml serve exited"
            try:
                return httpx.get(f"{url}/health", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        _wait(ready, timeout=180, what="medml serve to load the model")
        payload = {"inputs": [images[0].tolist()]}
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            assert httpx.post(f"{url}/predict", json=payload, headers=headers,
                              timeout=60).status_code == 401, headers
            assert httpx.get(f"{url}/version", headers=headers).status_code == 401, headers
        ok = {"Authorization": "Bearer from-env-token"}
        r = httpx.post(f"{url}/predict", json=payload, headers=ok, timeout=60)
        assert r.status_code == 200 and r.json()["model_version"] == "1", r.text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
