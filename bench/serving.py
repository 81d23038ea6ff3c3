"""Serving throughput: one registered imaging model served by `mlflow models serve` and by
`medml serve`, the same bounded set of requests on loopback at concurrency 1, 8 and 32.
Prints throughput, p50 and p99 latency for both, and the throughput ratio.

    .venv/bin/python bench/serving.py [--requests 2000] [--concurrency 1 8 32] [--epochs 2]
                                      [--image-size 28]

The model: `small_cnn` trained on BreastMNIST (official splits; 28 px images upsampled to
the `image_size` of params.yaml) by the lifecycle functions and registered in a throwaway
embedded store. The requests: one BreastMNIST test image each, as a base64 PNG in
MLflow's JSON form `{"dataframe_split": {"columns": ["image"], "data": [["<base64>"]]}}`,
which both servers accept, byte for byte the same. One
server runs at a time, each in its own process with its defaults (one uvicorn worker);
the load generator is a small asyncio HTTP/1.1 keep-alive client in this process (one
connection per concurrent client).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NPZ = ROOT.parent / "shared" / "data" / "imaging" / "breastmnist.npz"
MODEL = "bench-imaging"


# ---------------------------------------------------------------------- the model
def build_model(home: Path, npz: Path, epochs: int, image_size: int | None):
    """Import BreastMNIST, train and register one version; champion -> 1."""
    from medml import lifecycle, registry
    from medml.settings import load_settings

    ws = home / "ws"
    ws.mkdir(parents=True)
    env = {"GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b", "PATH": os.environ["PATH"]}
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    subprocess.run(["git", "-C", str(ws), "commit", "-q", "--allow-empty", "-m", "init",
                    "--author", "b <b@b>"], check=True, env=env)
    base = load_settings(ROOT / "params.yaml")
    imaging = base.task("imaging")
    imaging = imaging.model_copy(update={
        "train": imaging.train.model_copy(update={"epochs": epochs}),
        "data": {**imaging.data, **({"image_size": image_size} if image_size else {})}})
    s = base.model_copy(update={"workspace": ws, "home": home / "state",
                                "tasks": {**base.tasks, "imaging": imaging}})
    lifecycle.create_dataset(s, "imaging", "breastmnist", fmt="medmnist", src=npz)
    run = lifecycle.open_run(s, "breastmnist")
    trained = lifecycle.train(run, progress=False)
    evaluated = lifecycle.evaluate(run, trained)
    version = lifecycle.register(run, MODEL, evaluated, trained)
    registry.set_alias(s, MODEL, "champion", version, who="bench", why="serving benchmark")
    return s, version, evaluated.metrics.get("test_auroc")


def request_bodies(npz: Path) -> list[bytes]:
    import numpy as np
    from PIL import Image

    bodies = []
    for img in np.load(npz)["test_images"]:
        buf = io.BytesIO()
        Image.fromarray(img.astype(np.uint8)).save(buf, format="PNG")
        doc = {"dataframe_split": {"columns": ["image"],
                                  "data": [[base64.b64encode(buf.getvalue()).decode()]]}}
        bodies.append(json.dumps(doc).encode())
    return bodies


# ---------------------------------------------------------------------- the servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow(settings, version: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.mlflow_uri,
           "MLFLOW_REGISTRY_URI": settings.mlflow_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m",
           f"models:/{MODEL}/{version}", "--env-manager", "local", "-h", "127.0.0.1",
           "-p", str(port)]
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


MEDML_SERVE = """
import json, sys
from medml.serving import serve
from medml.settings import Settings
serve(Settings(**json.loads(sys.argv[1])), sys.argv[2], port=int(sys.argv[3]),
      log_level="warning")
"""


def start_medml(settings, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-c", MEDML_SERVE, settings.model_dump_json(), MODEL, str(port)]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    sys.exit(f"server not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------- the load
async def load(port: int, path: str, bodies: list[bytes], concurrency: int, n: int) -> dict:
    """``n`` requests (bodies cycled in order), ``concurrency`` keep-alive connections."""
    reqs = [(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
             f"Content-Type: application/json\r\nContent-Length: {len(b)}\r\n\r\n").encode() + b
            for b in bodies]
    latencies: list[float] = []
    errors: dict[int, int] = {}
    counter = iter(range(n))

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                t0 = time.perf_counter()
                writer.write(reqs[i % len(reqs)])
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").lower().split("\r\n")
                status = int(lines[0].split()[1])
                length = next(int(h.split(":", 1)[1]) for h in lines
                              if h.startswith("content-length:"))
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors[status] = errors.get(status, 0) + 1
                if any(h.startswith("connection:") and "close" in h for h in lines):
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    lat = sorted(latencies)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))] * 1000

    return {"requests": len(lat), "errors": errors, "wall_s": wall, "rps": len(lat) / wall,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def check_same_answers(mlflow_port: int, medml_port: int, body: bytes) -> float:
    """Both servers score the same request alike: the largest probability difference."""
    import httpx

    h = {"content-type": "application/json"}
    a = httpx.post(f"http://127.0.0.1:{mlflow_port}/invocations", content=body, headers=h)
    b = httpx.post(f"http://127.0.0.1:{medml_port}/predict", content=body, headers=h)
    if a.status_code != 200 or b.status_code != 200:
        sys.exit(f"a check request failed: mlflow {a.status_code} {a.text[:300]}; "
                 f"medml {b.status_code} {b.text[:300]}")
    pa, pb = a.json()["predictions"][0], b.json()["predictions"][0]
    if pa["label"] != pb["label"]:
        sys.exit(f"the servers disagree: {pa} vs {pb}")
    return max(abs(pa[k] - pb[k]) for k in pa if k.startswith("p_"))


def run_server(kind: str, start, url: str, path: str, bodies: list[bytes], levels: list[int],
               n: int, log: Path) -> dict[int, dict]:
    proc = start()
    try:
        wait_ready(url, proc, log)
        asyncio.run(load(int(url.split(":")[2].split("/")[0]), path, bodies, 8, 200))  # warm
        out = {}
        for c in levels:
            out[c] = asyncio.run(load(int(url.split(":")[2].split("/")[0]), path, bodies, c, n))
            r = out[c]
            print(f"{kind:6s} c={c:<3d} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                  f"p99 {r['p99_ms']:7.2f} ms  non-200 {r['errors'] or 0}", flush=True)
        return out
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    ap.add_argument("--requests", type=int, default=2000, help="per server and concurrency")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--epochs", type=int, default=2, help="training epochs (speed only)")
    ap.add_argument("--image-size", type=int, default=None,
                    help="the model's input size (default: params.yaml, 56 px)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    import logging
    import warnings

    import mlflow
    import psutil
    import torch
    from rich.console import Console
    from rich.table import Table

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    home = Path(tempfile.mkdtemp(prefix="medml-bench-serving-"))
    try:
        t0 = time.perf_counter()
        settings, version, auroc = build_model(home, args.npz, args.epochs,
                                                 args.image_size)
        print(f"registered {MODEL} version {version} (test AUROC {auroc:.3f}) in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        bodies = request_bodies(args.npz)
        mp, dp = free_port(), free_port()
        mlog, dlog = home / "mlflow-serve.log", home / "medml-serve.log"

        # one answer compared on both (each started alone below for the timings)
        pm = start_mlflow(settings, version, mp, mlog)
        pd_ = start_medml(settings, dp, dlog)
        try:
            wait_ready(f"http://127.0.0.1:{mp}/ping", pm, mlog)
            wait_ready(f"http://127.0.0.1:{dp}/health", pd_, dlog)
            diff = check_same_answers(mp, dp, bodies[0])
        finally:
            stop(pm)
            stop(pd_)
        print(f"same request, both servers: max |p difference| {diff:.2e}", flush=True)

        results = {
            "mlflow models serve": run_server(
                "mlflow", lambda: start_mlflow(settings, version, mp, mlog),
                f"http://127.0.0.1:{mp}/ping", "/invocations", bodies, args.concurrency,
                args.requests, mlog),
            "medml serve": run_server(
                "medml", lambda: start_medml(settings, dp, dlog),
                f"http://127.0.0.1:{dp}/health", "/predict", bodies, args.concurrency,
                args.requests, dlog),
        }
    finally:
        shutil.rmtree(home, ignore_errors=True)

    size = settings.task("imaging").data.get("image_size")
    machine = (f"{platform.node()}, {os.cpu_count()} cores ({platform.machine()}), "
               f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python "
               f"{platform.python_version()}, torch {torch.__version__}, "
               f"mlflow {mlflow.__version__}")
    table = Table(title=f"{MODEL}: small_cnn, {size} px, {args.requests} requests of one "
                        f"28 px PNG per server and concurrency, {datetime.now(UTC):%Y-%m-%d}")
    for col in ("concurrency", "mlflow req/s", "mlflow p50 ms", "mlflow p99 ms",
                "medml req/s", "medml p50 ms", "medml p99 ms", "throughput ratio"):
        table.add_column(col, justify="right")
    for c in args.concurrency:
        m, d = results["mlflow models serve"][c], results["medml serve"][c]
        table.add_row(str(c), f"{m['rps']:.1f}", f"{m['p50_ms']:.2f}", f"{m['p99_ms']:.2f}",
                      f"{d['rps']:.1f}", f"{d['p50_ms']:.2f}", f"{d['p99_ms']:.2f}",
                      f"{d['rps'] / m['rps']:.2f}x")
    Console(width=150).print(table)
    print(f"machine: {machine}")
    bad = {k: {c: r["errors"] for c, r in v.items() if r["errors"]} for k, v in results.items()}
    if any(bad.values()):
        print(f"non-200 answers: {bad}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "date": datetime.now(UTC)
                                         .isoformat(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
