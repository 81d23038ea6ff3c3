"""infra/, checked offline (no Docker, no cluster on this machine): the compose file against
the Compose Specification's JSON schema (the copy vendored in check-jsonschema), after
interpolating ``${VAR...}`` as ``docker compose`` does; every Kubernetes manifest against
the Kubernetes OpenAPI schemas bundled in kubernetes-validate (strict: unknown fields
fail); the Dockerfile's shape; and cross-checks of the wiring that no schema sees: names
that must exist, ports that must agree, settings the MedML containers need, the flags and
variable names the installed MLflow, Prefect and medml actually read."""

from __future__ import annotations

import copy
import fnmatch
import importlib.resources
import inspect
import json
import re
import shlex
import subprocess
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from .conftest import ROOT

INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
K8S_VERSION = "1.33"  # a recent release among those kubernetes-validate bundles
MEDML_CLIENTS = ("prefect-worker", "serving")  # the containers that run medml code
PORTS = {"mlflow": 5000, "prefect-server": 4200, "serving": 8080}
# Read by the manifests themselves (an argument of `medml serve`), not by medml.
INFRA_ONLY_VARS = {"MEDML_SERVE_MODEL"}


# ----------------------------------------------------------------- compose interpolation
_VAR = re.compile(r"""\$(?:
      (?P<escaped>\$)
    | \{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}$]*))?\}
    | (?P<named>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<invalid>)
    )""", re.VERBOSE)


class MissingVariable(Exception):
    """A ``${VAR:?message}`` (or ``${VAR?message}``) whose variable is not set."""


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def variables_used(value: Any) -> dict[str, set[str]]:
    """Each variable a compose file reads, with the operators it is read with ("" for
    none, ":-" for a default, ":?" for required...)."""
    used: dict[str, set[str]] = {}
    for text in _strings(value):
        for m in _VAR.finditer(text):
            if name := m["braced"] or m["named"]:
                used.setdefault(name, set()).add(m["op"] or "")
    return used


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """``value`` (a parsed compose file, or any part of it) with ``${VAR}``,
    ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}``, ``${VAR?err}``,
    ``${VAR:+alt}``, ``${VAR+alt}`` and ``$VAR`` replaced from ``env``, and ``$$`` by
    ``$``, as the Compose Specification says. Nested defaults are refused."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["named"]
        if name is None:
            raise ValueError(f"invalid interpolation in {value!r} at {m.start()}")
        op, arg = m["op"] or "", m["arg"] or ""
        current = env.get(name)
        if op == ":-":
            return current if current else arg
        if op == "-":
            return arg if current is None else current
        if op in (":?", "?") and (current is None or (op == ":?" and not current)):
            raise MissingVariable(f"{name}: {arg}")
        if op == ":+":
            return arg if current else ""
        if op == "+":
            return "" if current is None else arg
        return current or ""

    return _VAR.sub(sub, value)


def shell_expand(texts: list[str], env: Mapping[str, str]) -> list[str]:
    """Each of ``texts`` expanded by bash, in double quotes, with only ``env`` set: POSIX
    shell parameter expansion, whose ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?err}``, ``${VAR?err}``, ``${VAR:+alt}``, ``${VAR+alt}`` and ``$VAR`` the
    Compose Specification's interpolation follows (docker compose itself is not on this
    machine); compose's ``$$`` is passed as the shell's escaped ``\\$``. MissingVariable
    when bash refuses (an unset ``:?`` or ``?`` variable)."""
    def quoted(text: str) -> str:
        for c in ("\\", '"', "`"):
            text = text.replace(c, "\\" + c)
        return '"' + text.replace("$$", "\\$") + '"'

    done = subprocess.run(["/bin/bash", "-c", "printf '%s\\0' " + " ".join(map(quoted, texts))],
                          env=dict(env), capture_output=True, text=True)
    if done.returncode:
        raise MissingVariable(done.stderr.strip())
    out = done.stdout.split("\0")
    assert out[-1] == "" and len(out) == len(texts) + 1, done
    return out[:-1]


def test_interpolation_follows_the_compose_rules(compose_raw: dict[str, Any],
                                                 env_example: dict[str, str]) -> None:
    """``interpolate``, through which every compose check reads compose.yaml, agrees with
    the shell's expansion: on each rule, and on every string of compose.yaml with
    .env.example as .env and with the required variables alone; and .env.example reads
    as a dotenv parser (python-dotenv's; compose's is another of its kind) reads it."""
    env = {"SET": "v", "EMPTY": ""}
    cases = {"${SET}": "v", "$SET/x": "v/x", "${UNSET}": "", "${UNSET:-d}": "d",
             "${EMPTY:-d}": "d", "${EMPTY-d}": "", "${SET:-d}": "v", "${SET:+alt}": "alt",
             "${EMPTY:+alt}": "", "${EMPTY+alt}": "alt", "$${SET}": "${SET}", "a$$b": "a$b",
             "${SET:?no}": "v", "${EMPTY?no}": "", "${UNSET-d}": "d", "${UNSET+alt}": "",
             "${SET-d} ${SET+alt}": "v alt", 'q"\\`x`$$(id)': 'q"\\`x`$(id)'}
    assert [interpolate(t, env) for t in cases] == list(cases.values()) \
        == shell_expand(list(cases), env)
    for bad in ("${UNSET:?needed}", "${EMPTY:?needed}", "${UNSET?needed}"):
        with pytest.raises(MissingVariable, match="needed"):
            interpolate(bad, env)
        with pytest.raises(MissingVariable, match="needed"):
            shell_expand([bad], env)
    # stricter than a shell: nested defaults are refused (compose.yaml has none)
    with pytest.raises(ValueError, match="invalid interpolation"):
        interpolate("${A:-${B}}", env)
    assert variables_used({"k": ["${A:-1} $$C", {"n": "$B"}], "m": 5, "o": "${A:?x}"}) \
        == {"A": {":-", ":?"}, "B": {""}}

    # The product: compose.yaml's own strings, as the compose checks below see them.
    texts = [t for t in _strings(compose_raw) if "$" in t]
    required = {n for n, ops in variables_used(compose_raw).items() if ":?" in ops}
    assert texts and required
    for label, values in ((".env.example", env_example),
                          ("required only", {n: env_example[n] for n in required})):
        mine, shell = [interpolate(t, values) for t in texts], shell_expand(texts, values)
        assert mine == shell, (label, [(t, a, b) for t, a, b in zip(texts, mine, shell,
                                                                    strict=True) if a != b])
    for name in required:
        with pytest.raises(MissingVariable, match=name):
            shell_expand(texts, {n: env_example[n] for n in required - {name}})
    from dotenv import dotenv_values

    assert read_env_example() == dotenv_values(INFRA / ".env.example")


# ----------------------------------------------------------------- loading
def read_env_example() -> dict[str, str]:
    """``NAME=value`` lines of .env.example (comments and blank lines skipped)."""
    env: dict[str, str] = {}
    for n, line in enumerate((INFRA / ".env.example").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, val = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), \
            f".env.example:{n}: not NAME=value: {line!r}"
        assert name not in env, f".env.example:{n}: {name} set twice"
        env[name] = val
    return env


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_example()


@pytest.fixture(scope="module")
def compose_raw() -> dict[str, Any]:
    doc = yaml.safe_load((INFRA / "compose.yaml").read_text())
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


@pytest.fixture(scope="module")
def compose(compose_raw: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    """compose.yaml as `docker compose --env-file infra/.env` sees it, with .env.example
    as infra/.env."""
    return interpolate(compose_raw, env_example)


@pytest.fixture(scope="module")
def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    """(file name, resource) for every resource in infra/k8s/*.yaml but the kustomization."""
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
                docs.append((path.name, doc))
    return docs


def compose_schema() -> dict[str, Any]:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is not installed "
                        "(pip install check-jsonschema==0.39.0): the Compose Specification's "
                        "JSON schema is the copy it vendors")
    ref = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") \
        .joinpath("compose-spec.json")
    return json.loads(ref.read_text())


def schema_errors(doc: Any, schema: dict[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
                  for e in validator.iter_errors(doc))


def kubernetes_validate():
    return pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not "
                               "installed (pip install kubernetes-validate==1.37.0): it holds "
                               "the Kubernetes schemas, offline")


def k8s_errors(doc: dict[str, Any]) -> str | None:
    """Why ``doc`` is not a valid resource of Kubernetes K8S_VERSION (strict), or None."""
    kv = kubernetes_validate()
    try:
        kv.validate(doc, K8S_VERSION, strict=True)
    except kv.ValidationError as exc:
        return f"{'.'.join(map(str, exc.path)) or '<root>'}: {exc.message[:300]}"
    except (kv.SchemaNotFoundError, kv.InvalidSchemaError) as exc:
        return exc.message
    return None


# ----------------------------------------------------------------- compose helpers
def cmd_list(cmd: Any) -> list[str]:
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd or []]


def flag(args: list[str], name: str) -> str | None:
    """The value of ``--name V`` or ``--name=V`` in ``args``."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def published_container_ports(service: dict[str, Any]) -> set[int]:
    out = set()
    for p in service.get("ports") or []:
        out.add(int(p["target"]) if isinstance(p, dict) else int(str(p).rsplit(":", 1)[-1]))
    return out


def healthcheck_text(service: dict[str, Any]) -> str:
    return " ".join(cmd_list((service.get("healthcheck") or {}).get("test")))


def buckets_created(script: str) -> set[str]:
    """Buckets an ``mc mb ALIAS/BUCKET ...`` line of a shell script creates."""
    out = set()
    for line in script.splitlines():
        words = shlex.split(line) if line.strip() else []
        if words[:2] == ["mc", "mb"]:
            out |= {w.split("/", 1)[1].strip("/") for w in words[2:] if "/" in w}
    return out


def databases_created(sql: str) -> set[str]:
    return set(re.findall(r"CREATE\s+DATABASE\s+\"?(\w+)\"?", sql, re.IGNORECASE))


def host_allowed(allowed: str, host: str) -> bool:
    """MLflow's Host-header check (mlflow.server.security_utils.is_allowed_host_header)."""
    patterns = [h.strip() for h in allowed.split(",")]
    return "*" in patterns or any(
        fnmatch.fnmatch(host, p) if "*" in p else host == p for p in patterns)


def medml_env_names() -> set[str]:
    """The MEDML_* variables medml reads: settings fields and its CLI's envvars."""
    import typer.main

    from medml import cli
    from medml.settings import Settings

    names = {f"MEDML_{f.upper()}" for f in Settings.model_fields}
    group = typer.main.get_command(cli.app)
    stack = [group]
    while stack:
        cmd = stack.pop()
        for p in cmd.params:
            envvars = p.envvar if isinstance(p.envvar, list | tuple) else [p.envvar]
            names |= {e for e in envvars if e}
        stack += list(getattr(cmd, "commands", {}).values())
    return names


# ================================================================= compose
def test_compose_matches_the_compose_specification(
        compose_raw: dict[str, Any], env_example: dict[str, str]) -> None:
    """Valid with .env.example as .env, and with the defaults alone (only the required
    variables set)."""
    schema = compose_schema()
    required = {n for n, ops in variables_used(compose_raw).items() if ":?" in ops}
    for label, env in ((".env.example", env_example),
                       ("defaults", {n: env_example[n] for n in required})):
        errors = schema_errors(interpolate(compose_raw, env), schema)
        assert not errors, (f"compose.yaml ({label}) against the Compose Specification:\n"
                            + "\n".join(errors))


def test_compose_variables_are_documented_and_defaulted(
        compose_raw: dict[str, Any], env_example: dict[str, str]) -> None:
    used = variables_used(compose_raw)
    assert used, "compose.yaml reads no variable from .env"
    undocumented = sorted(set(used) - set(env_example))
    assert not undocumented, f"used in compose.yaml, missing from .env.example: {undocumented}"
    stale = sorted(set(env_example) - set(used))
    assert not stale, f"in .env.example, read by nothing in compose.yaml: {stale}"
    # every variable has a default, or is required with a message; required ones are set
    bare = sorted(n for n, ops in used.items() if ops - {":-", ":?"})
    assert not bare, f"use ${{VAR:-default}} (or ${{VAR:?why}}) for: {bare}"
    required = {n for n, ops in used.items() if ":?" in ops}
    assert all(env_example[n] for n in required), "a required variable is empty in .env.example"
    # with no .env at all, only the required ones are missing
    for name in required:
        with pytest.raises(MissingVariable, match=name):
            interpolate(compose_raw, {k: env_example[k] for k in required - {name}})
    interpolate(compose_raw, {k: env_example[k] for k in required})


def test_compose_hard_codes_no_secret(compose_raw: dict[str, Any],
                                      env_example: dict[str, str]) -> None:
    for name, svc in compose_raw["services"].items():
        for key, val in environment(svc).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", key):
                assert "${" in val, f"{name}: {key} is hard-coded; take it from .env"
        for arg in cmd_list(svc.get("command")):
            if re.search(r"://[^/@\s]+:[^/@\s]+@", arg):
                assert re.search(r"://[^/@]*\$\{[^}]+\}[^/@]*:[^/@]*\$\{[^}]+\}", arg), \
                    f"{name}: credentials hard-coded in {arg!r}"
    for key, val in env_example.items():
        if "PASSWORD" in key:
            assert "change-me" in val, f".env.example: {key} is not an obvious placeholder"


def test_compose_services_are_wired(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "minio", "minio-init", "mlflow", "prefect-server", "prefect-worker",
            "serving"} <= set(services)
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        deps = {d: {"condition": "service_started"} for d in deps} if isinstance(deps, list) \
            else deps
        for dep, how in deps.items():
            assert dep in services, f"{name} depends on {dep}, which is no service"
            cond = how.get("condition", "service_started")
            if cond == "service_healthy":
                assert services[dep].get("healthcheck"), \
                    f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
            if cond == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", \
                    f"{name} waits for {dep} to complete, but {dep} restarts"
        for vol in svc.get("volumes") or []:
            source = vol["source"] if isinstance(vol, dict) else str(vol).split(":")[0]
            if not source.startswith((".", "/", "~")):
                assert source in (compose.get("volumes") or {}), \
                    f"{name}: named volume {source} is not declared under volumes:"
        for cfg in svc.get("configs") or []:
            source = cfg["source"] if isinstance(cfg, dict) else cfg
            assert source in (compose.get("configs") or {}), f"{name}: config {source} missing"
    # every long-running service has a healthcheck
    for name in ("postgres", "minio", "mlflow", "prefect-server", "prefect-worker", "serving"):
        assert services[name].get("healthcheck"), f"{name} has no healthcheck"
    # the MedML services run the image built from infra/Dockerfile
    for name in ("mlflow", "prefect-server", *MEDML_CLIENTS):
        build = services[name].get("build") or {}
        assert (INFRA / build.get("context", ".") / build.get("dockerfile", "Dockerfile")) \
            .resolve() == (INFRA / "Dockerfile").resolve(), f"{name} is not built from it"
        assert (INFRA / build["context"]).resolve() == ROOT, "the build context is not the repo"


def test_compose_servers_ports_and_stores(compose: dict[str, Any]) -> None:
    services = compose["services"]
    mlflow = cmd_list(services["mlflow"]["command"])
    prefect = cmd_list(services["prefect-server"]["command"])
    serving = cmd_list(services["serving"]["command"])
    assert mlflow[:2] == ["mlflow", "server"] and flag(mlflow, "--host") == "0.0.0.0"
    assert prefect[:3] == ["prefect", "server", "start"] and flag(prefect, "--host") == "0.0.0.0"
    assert serving[:2] == ["medml", "serve"] and flag(serving, "--host") == "0.0.0.0"
    worker = cmd_list(services["prefect-worker"]["command"])
    assert worker[:3] == ["prefect", "worker", "start"]
    assert flag(worker, "--pool") == "medml" and flag(worker, "--type") == "process"
    for name, args, health in (("mlflow", mlflow, "/health"),
                               ("prefect-server", prefect, "/api/health"),
                               ("serving", serving, "/health")):
        port = PORTS[name]
        assert flag(args, "--port") == str(port), f"{name} does not listen on {port}"
        assert published_container_ports(services[name]) == {port}, f"{name}: ports"
        assert f":{port}{health}" in healthcheck_text(services[name]), f"{name}: healthcheck"

    # the stores: PostgreSQL databases created by the init script, buckets by minio-init
    dbs = databases_created(compose["configs"]["postgres-init"]["content"])
    buckets = buckets_created(" ".join(cmd_list(services["minio-init"]["command"])))
    store = urlsplit(flag(mlflow, "--backend-store-uri") or "")
    prefect_db = urlsplit(services["prefect-server"]["environment"]
                          ["PREFECT_API_DATABASE_CONNECTION_URL"])
    for url, scheme in ((store, "postgresql+psycopg"), (prefect_db, "postgresql+asyncpg")):
        assert url.scheme == scheme and url.hostname == "postgres" and url.port == 5432
        assert url.path.strip("/") in dbs, f"database {url.path} is not created"
        assert url.username and url.password, "no credentials in the database URL"
    artifacts = urlsplit(flag(mlflow, "--artifacts-destination") or "")
    assert artifacts.scheme == "s3" and artifacts.netloc in buckets
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_compose_medml_containers_get_the_server_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    mlflow_args = cmd_list(services["mlflow"]["command"])
    buckets = buckets_created(" ".join(cmd_list(services["minio-init"]["command"])))
    for name in MEDML_CLIENTS:
        env = environment(services[name])
        assert env.get("MEDML_PROFILE") == "server", f"{name}: MEDML_PROFILE"
        tracking = urlsplit(env.get("MEDML_TRACKING_URI", ""))
        assert tracking.hostname in services and tracking.hostname == "mlflow", name
        assert tracking.port == PORTS["mlflow"], f"{name}: MEDML_TRACKING_URI port"
        assert host_allowed(flag(mlflow_args, "--allowed-hosts") or "", tracking.netloc), \
            f"the MLflow server would refuse {name}'s Host header {tracking.netloc}"
        api = urlsplit(env.get("MEDML_PREFECT_API_URL", ""))
        assert api.hostname == "prefect-server" and api.port == PORTS["prefect-server"]
        assert api.path == "/api", f"{name}: MEDML_PREFECT_API_URL must end in /api"
        remote = urlsplit(env.get("MEDML_DVC_REMOTE", ""))
        assert remote.scheme != "s3" or remote.netloc in buckets, f"{name}: DVC bucket"
    assert environment(services["prefect-worker"])["PREFECT_API_URL"] == \
        environment(services["prefect-worker"])["MEDML_PREFECT_API_URL"]
    assert "MEDML_SERVE_TOKEN" in environment(services["serving"])


# ================================================================= Kubernetes
def workloads(docs: list[tuple[str, dict]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in docs
            if d["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet")}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def all_containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers") or []
    yield from spec["containers"]


def by_kind(docs: list[tuple[str, dict]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in docs if d["kind"] == kind}


def container_env(container: dict[str, Any], docs: list[tuple[str, dict]]
                  ) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: envFrom, then env (later wins),
    with $(VAR) expanded from what came before; secrets read as "<secret>"."""
    maps = by_kind(docs, "ConfigMap")
    secrets = by_kind(docs, "Secret")
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        if "configMapRef" in src:
            env |= maps[src["configMapRef"]["name"]].get("data", {})
        if "secretRef" in src:
            env |= dict.fromkeys(secrets[src["secretRef"]["name"]].get("stringData", {}),
                                 "<secret>")
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]),
                                       str(item["value"]))
        elif "configMapKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = maps[ref["name"]]["data"][ref["key"]]
        else:
            env[item["name"]] = "<secret>"
    return env


def expand_args(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), a)
            for a in [*(container.get("command") or []), *(container.get("args") or [])]]


def resolve_port(container: dict[str, Any], port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    return next((p["containerPort"] for p in container.get("ports") or []
                 if p.get("name") == port), None)


def main_container(docs: list[tuple[str, dict]], name: str) -> dict[str, Any]:
    return pod_spec(workloads(docs)[name])["containers"][0]


def test_k8s_manifests_match_the_kubernetes_schemas(
        k8s_docs: list[tuple[str, dict[str, Any]]]) -> None:
    kubernetes_validate()
    assert k8s_docs, "no manifest under infra/k8s"
    errors = [f"{f} {d.get('kind')}/{d.get('metadata', {}).get('name')}: {why}"
              for f, d in k8s_docs if (why := k8s_errors(d))]
    assert not errors, f"against Kubernetes {K8S_VERSION} (strict):\n" + "\n".join(errors)


def test_k8s_kustomization_lists_every_manifest(
        k8s_docs: list[tuple[str, dict[str, Any]]]) -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kust["kind"] == "Kustomization"
    listed = kust["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == files, f"kustomization resources {sorted(listed)} != {sorted(files)}"
    # the image it retags is the one the MedML containers name
    names = {i["name"] for i in kust.get("images") or []}
    for wl in workloads(k8s_docs).values():
        for c in all_containers(wl):
            if c["image"].split(":")[0] == "medml":
                assert "medml" in names
    ns = kust.get("namespace")
    assert ns in by_kind(k8s_docs, "Namespace"), f"namespace {ns} is not created"


def test_k8s_every_service_selects_a_workload(k8s_docs: list[tuple[str, dict]]) -> None:
    wls = workloads(k8s_docs)
    services = by_kind(k8s_docs, "Service")
    assert {"postgres", "minio", "mlflow", "prefect-server", "serving"} <= set(services)
    for name, svc in services.items():
        selector = svc["spec"]["selector"]
        matched = [w for w in wls.values()
                   if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
                   and w["kind"] != "Job"]
        assert len(matched) == 1, f"Service {name} selects {len(matched)} workloads"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            found = {resolve_port(c, target) for c in pod_spec(matched[0])["containers"]}
            assert found - {None}, f"Service {name}: targetPort {target} is no container port"
    for wl in wls.values():
        sel = wl["spec"].get("selector", {}).get("matchLabels", {})
        assert sel.items() <= wl["spec"]["template"]["metadata"]["labels"].items(), \
            f"{wl['metadata']['name']}: selector does not match its pod labels"
        if wl["kind"] == "StatefulSet":
            assert wl["spec"]["serviceName"] in services


def test_k8s_references_resolve(k8s_docs: list[tuple[str, dict]]) -> None:
    maps, secrets = by_kind(k8s_docs, "ConfigMap"), by_kind(k8s_docs, "Secret")
    pvcs = by_kind(k8s_docs, "PersistentVolumeClaim")

    def keys(kind: str, name: str) -> set[str]:
        store = maps if kind == "ConfigMap" else secrets
        assert name in store, f"{kind} {name} does not exist"
        return set(store[name].get("data") or {}) | set(store[name].get("stringData") or {})

    for wname, wl in workloads(k8s_docs).items():
        spec = pod_spec(wl)
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        volumes |= {t["metadata"]["name"]: t for t in wl["spec"].get("volumeClaimTemplates", [])}
        for v in spec.get("volumes") or []:
            if "configMap" in v:
                keys("ConfigMap", v["configMap"]["name"])
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in pvcs, f"{wname}: PVC"
        for c in all_containers(wl):
            where = f"{wname}/{c['name']}"
            for src in c.get("envFrom") or []:
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in src:
                        keys(kind, src[key]["name"])
            defined = set()
            for src in c.get("envFrom") or []:
                ref = src.get("configMapRef") or src.get("secretRef")
                defined |= keys("ConfigMap" if "configMapRef" in src else "Secret", ref["name"])
            for item in c.get("env") or []:
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    ref = (item.get("valueFrom") or {}).get(key)
                    if ref and not ref.get("optional"):
                        assert ref["key"] in keys(kind, ref["name"]), \
                            f"{where}: {kind} {ref['name']} has no key {ref['key']}"
                for var in re.findall(r"\$\((\w+)\)", str(item.get("value", ""))):
                    assert var in defined, f"{where}: {item['name']} uses $({var}) before it"
                defined.add(item["name"])
            for arg in [*(c.get("command") or []), *(c.get("args") or [])]:
                for var in re.findall(r"\$\((\w+)\)", arg):
                    assert var in defined, f"{where}: $({var}) in its command is not set"
            for m in c.get("volumeMounts") or []:
                assert m["name"] in volumes, f"{where}: volume {m['name']} is not declared"


def test_k8s_resources_probes_and_users(k8s_docs: list[tuple[str, dict]]) -> None:
    uid = dockerfile_user()
    for wname, wl in workloads(k8s_docs).items():
        spec = pod_spec(wl)
        for c in all_containers(wl):
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(part) or {}), \
                    f"{wname}/{c['name']}: resources.{part} needs cpu and memory"
            if c["image"].split(":")[0] == "medml":
                ctx = spec.get("securityContext") or {}
                assert ctx.get("runAsNonRoot") is True, f"{wname}: runAsNonRoot"
                assert str(ctx.get("runAsUser")) == uid.split(":")[0], \
                    f"{wname}: runAsUser is not the Dockerfile's USER {uid}"
        if wl["kind"] != "Job":
            for c in spec["containers"]:
                assert c.get("livenessProbe"), f"{wname}/{c['name']}: no livenessProbe"
    serving = main_container(k8s_docs, "serving")
    ready, alive = serving["readinessProbe"], serving["livenessProbe"]
    assert ready["httpGet"]["path"] == "/health"
    assert resolve_port(serving, ready["httpGet"]["port"]) == PORTS["serving"]
    # /health is 503 until a champion is loaded: liveness must not restart the pod for that
    assert alive.get("httpGet", {}).get("path") != "/health"


def test_k8s_servers_ports_and_stores(k8s_docs: list[tuple[str, dict]]) -> None:
    services = by_kind(k8s_docs, "Service")
    maps = by_kind(k8s_docs, "ConfigMap")
    for name, health in (("mlflow", "/health"), ("prefect-server", "/api/health"),
                         ("serving", "/health")):
        port = PORTS[name]
        c = main_container(k8s_docs, name)
        args = expand_args(c, container_env(c, k8s_docs))
        assert flag(args, "--port") == str(port) and flag(args, "--host") == "0.0.0.0", name
        assert [p["containerPort"] for p in c["ports"]] == [port], f"{name}: containerPort"
        assert [p["port"] for p in services[name]["spec"]["ports"]] == [port], f"{name}: port"
        assert c["readinessProbe"]["httpGet"]["path"] == health
    mlflow = main_container(k8s_docs, "mlflow")
    mlflow_env = container_env(mlflow, k8s_docs)
    args = expand_args(mlflow, mlflow_env)
    assert args[:2] == ["mlflow", "server"]
    dbs = databases_created("".join(maps["postgres-init"]["data"].values()))
    job = workloads(k8s_docs)["minio-buckets"]
    buckets = buckets_created("\n".join(expand_args(pod_spec(job)["containers"][0], {})))
    prefect_env = container_env(main_container(k8s_docs, "prefect-server"), k8s_docs)
    for url, scheme in ((flag(args, "--backend-store-uri"), "postgresql+psycopg"),
                        (prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"],
                         "postgresql+asyncpg")):
        u = urlsplit(url or "")
        assert u.scheme == scheme and u.hostname in services and u.port == 5432, url
        assert u.path.strip("/") in dbs, f"database {u.path} is not created"
        assert "$(" not in (url or ""), f"unexpanded variable in {url}"
    artifacts = urlsplit(flag(args, "--artifacts-destination") or "")
    assert artifacts.scheme == "s3" and artifacts.netloc in buckets
    assert urlsplit(mlflow_env["MLFLOW_S3_ENDPOINT_URL"]).hostname in services
    worker = main_container(k8s_docs, "prefect-worker")
    wargs = expand_args(worker, container_env(worker, k8s_docs))
    assert wargs[:3] == ["prefect", "worker", "start"]
    assert flag(wargs, "--pool") == "medml" and flag(wargs, "--type") == "process"
    serving = main_container(k8s_docs, "serving")
    sargs = expand_args(serving, container_env(serving, k8s_docs))
    assert sargs[:2] == ["medml", "serve"] and not sargs[2].startswith(("$(", "-"))


def test_k8s_medml_containers_get_the_server_profile(k8s_docs: list[tuple[str, dict]]) -> None:
    services = by_kind(k8s_docs, "Service")
    mlflow = main_container(k8s_docs, "mlflow")
    allowed = flag(expand_args(mlflow, container_env(mlflow, k8s_docs)), "--allowed-hosts")
    job = workloads(k8s_docs)["minio-buckets"]
    buckets = buckets_created("\n".join(expand_args(pod_spec(job)["containers"][0], {})))
    for name in MEDML_CLIENTS:
        env = container_env(main_container(k8s_docs, name), k8s_docs)
        assert env.get("MEDML_PROFILE") == "server", f"{name}: MEDML_PROFILE"
        tracking = urlsplit(env.get("MEDML_TRACKING_URI", ""))
        assert tracking.hostname == "mlflow" and tracking.port == PORTS["mlflow"], name
        assert tracking.port in [p["port"] for p in services["mlflow"]["spec"]["ports"]]
        assert host_allowed(allowed or "", tracking.netloc), \
            f"the MLflow server would refuse {name}'s Host header {tracking.netloc}"
        api = urlsplit(env.get("MEDML_PREFECT_API_URL", ""))
        assert api.hostname == "prefect-server" and api.port == PORTS["prefect-server"]
        assert api.path == "/api"
        remote = urlsplit(env.get("MEDML_DVC_REMOTE", ""))
        assert remote.scheme != "s3" or remote.netloc in buckets, f"{name}: DVC bucket"
    worker_env = container_env(main_container(k8s_docs, "prefect-worker"), k8s_docs)
    assert worker_env["PREFECT_API_URL"] == worker_env["MEDML_PREFECT_API_URL"]


def test_k8s_secret_holds_placeholders_only(k8s_docs: list[tuple[str, dict]]) -> None:
    secrets = by_kind(k8s_docs, "Secret")
    assert secrets
    for name, secret in secrets.items():
        assert "data" not in secret, f"Secret {name}: use stringData placeholders"
        for key, val in secret["stringData"].items():
            if re.search(r"PASSWORD|TOKEN|SECRET|KEY", key):
                assert val.startswith("CHANGE-ME"), f"Secret {name}: {key} is no placeholder"
    # no password anywhere else in the manifests
    for f, d in k8s_docs:
        if d["kind"] == "Secret":
            continue
        text = yaml.safe_dump(d)
        assert not re.search(r"://[^/@\s$]+:[^/@\s$(]+@", text), f"{f}: credentials in a URL"


# ================================================================= both: names the tools read
def test_variable_and_flag_names_exist_in_the_installed_tools(
        compose: dict[str, Any], k8s_docs: list[tuple[str, dict]]) -> None:
    """A misspelt PREFECT_*, MLFLOW_* or MEDML_* variable or CLI flag is silently ignored
    (or fails only at start-up): check them against the installed MLflow, Prefect, medml."""
    import mlflow.cli
    import mlflow.environment_variables
    import prefect.cli.server
    import prefect.cli.worker
    import typer.main
    from prefect.settings.legacy import _get_valid_setting_names
    from prefect.settings.models.root import Settings as PrefectSettings

    from medml import cli

    prefect_names = _get_valid_setting_names(PrefectSettings)
    medml_names = medml_env_names() | INFRA_ONLY_VARS
    env_sets: dict[str, dict[str, str]] = {
        f"compose {n}": environment(s) for n, s in compose["services"].items()}
    for wl in workloads(k8s_docs).values():
        for c in all_containers(wl):
            env_sets[f"k8s {wl['metadata']['name']}/{c['name']}"] = \
                container_env(c, k8s_docs)
    env_sets["Dockerfile"] = dockerfile_env()
    for where, env in env_sets.items():
        for var in env:
            if var.startswith("PREFECT_"):
                assert var in prefect_names, f"{where}: {var} is no Prefect setting"
            if var.startswith("MLFLOW_"):
                assert hasattr(mlflow.environment_variables, var), \
                    f"{where}: {var} is no MLflow variable"
            if var.startswith("MEDML_"):
                assert var in medml_names, f"{where}: {var} is read by nothing in medml"

    mlflow_flags = {o for p in mlflow.cli.server.params for o in p.opts}
    serve = typer.main.get_command(cli.app).commands["serve"]
    serve_flags = {o for p in serve.params for o in p.opts}
    worker_src = inspect.getsource(prefect.cli.worker)
    server_src = inspect.getsource(prefect.cli.server)
    commands = [(f"compose {n}", cmd_list(s.get("command")))
                for n, s in compose["services"].items()]
    commands += [(f"k8s {n}", expand_args(c, container_env(c, k8s_docs)))
                 for n in ("mlflow", "prefect-server", "prefect-worker", "serving")
                 for c in [main_container(k8s_docs, n)]]
    for where, args in commands:
        flags = [a.split("=")[0] for a in args if a.startswith("--")]
        if args[:2] == ["mlflow", "server"]:
            known = mlflow_flags
        elif args[:2] == ["medml", "serve"]:
            known = serve_flags
        elif args[:3] == ["prefect", "worker", "start"]:
            known = {f for f in flags if f'"{f}"' in worker_src}
        elif args[:3] == ["prefect", "server", "start"]:
            known = {f for f in flags if f'"{f}"' in server_src}
        else:
            continue
        unknown = sorted(set(flags) - known)
        assert not unknown, f"{where}: {args[:3]} has no option {unknown}"


# ================================================================= Dockerfile
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of infra/Dockerfile, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (INFRA / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends in a line continuation"
    return out


def dockerfile_user() -> str:
    users = [a for i, a in dockerfile_instructions() if i == "USER"]
    assert users, "the Dockerfile sets no USER: the image would run as root"
    return users[-1]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, args in dockerfile_instructions():
        if instr == "ENV":
            env |= dict(w.split("=", 1) for w in shlex.split(args) if "=" in w)
    return env


def test_dockerfile_builds_a_non_root_medml_image() -> None:
    instructions = dockerfile_instructions()
    known = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
             "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK",
             "SHELL"}
    unknown = [i for i, _ in instructions if i not in known]
    assert not unknown, f"not Dockerfile instructions: {unknown}"
    assert instructions[0][0] == "FROM", "the first instruction is not FROM"
    assert instructions[0][1].startswith("python:3.11"), "the project needs Python 3.11"
    user = dockerfile_user()
    assert user.split(":")[0] not in ("root", "0"), "the image runs as root"
    assert user.split(":")[0].isdigit(), "USER must be numeric (Kubernetes runAsNonRoot)"
    runs = " ".join(a for i, a in instructions if i == "RUN")
    assert re.search(r"pip install .*-c constraints\.txt", runs), "not installed from constraints"
    if "+cpu" in (ROOT / "constraints.txt").read_text():
        assert "download.pytorch.org/whl/cpu" in (INFRA / "Dockerfile").read_text(), \
            "constraints.txt pins a +cpu torch: the PyTorch CPU index is needed"
    # every COPY source exists in the build context (the repository root)
    for instr, args in instructions:
        if instr == "COPY" and not args.startswith("--from"):
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            for src in words[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"


# ================================================================= the checks bite
def test_the_validators_catch_broken_files(compose: dict[str, Any],
                                           k8s_docs: list[tuple[str, dict]]) -> None:
    """The schemas are live: a misspelt key or a wrong type fails each validator."""
    schema = compose_schema()
    broken = copy.deepcopy(compose)
    broken["services"]["serving"]["healthceck"] = {"test": ["CMD", "true"]}
    assert any("healthceck" in e for e in schema_errors(broken, schema))
    broken = copy.deepcopy(compose)
    broken["services"]["serving"]["depends_on"] = {"mlflow": {"condition": "service_up"}}
    assert schema_errors(broken, schema)
    kubernetes_validate()
    deployment = copy.deepcopy(next(iter(workloads(k8s_docs).values())))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    assert "imagee" in (k8s_errors(deployment) or "")
    deployment["spec"]["template"]["spec"]["containers"][0].pop("imagee")
    deployment["spec"]["replicas"] = "two"
    assert k8s_errors(deployment)
    deployment["apiVersion"] = "apps/v1beta9"
    assert "Couldn't find schema" in (k8s_errors(deployment) or "")
