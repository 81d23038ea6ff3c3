"""Registry aliases with an append-only history in the tracking store.

MLflow aliases only (``champion``, ``challenger``), never stages. Every move is appended
as one registered-model tag ``medml.alias_history.<seq, 6 digits>`` whose value is one
compact JSON event::

    {"seq": 3, "at": "2026-11-25T05:12:03.114+00:00", "who": "alice", "alias": "champion",
     "from_version": "1", "to_version": "2", "why": "gate passed: ...",
     "decision_id": "4f0c...", "action": "set"}

``action`` is ``set`` or ``rollback``. Events are only ever added, under the next free
``seq`` (read back after writing: an event that lost a race with a concurrent writer is
appended again under the next key), so the history answers "which version served at
time T" on the SQLite store and on an MLflow server alike. Each function takes either
the settings (the store is configured from them) or an ``mlflow.MlflowClient``.
"""

from __future__ import annotations

import getpass
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from medml.errors import BadInputError, MedMLError, NotFoundError

log = logging.getLogger("medml.registry")

PREFIX = "medml.alias_history."
ALIASES = ("champion", "challenger")
MAX_VALUE = 4800  # registered-model tag values are VARCHAR(5000) in MLflow's SQL stores


NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def check_name(name: str) -> str:
    """A registered model name: letters, digits, '.', '-' and '_', starting with a letter
    or digit, at most 200 characters; BadInputError otherwise."""
    if not isinstance(name, str) or not NAME_RULE.fullmatch(name):
        raise BadInputError(f"model name {name!r}: use letters, digits, '.', '-' and '_' "
                            "(starting with a letter or digit, at most 200 characters)")
    return name


def parse_ref(model_ref: str) -> tuple[str, str | None, str | None]:
    """``NAME@alias`` -> (NAME, alias, None); ``NAME/3`` or ``NAME:3`` -> (NAME, None, "3");
    a bare ``NAME`` means ``NAME@champion``."""
    if "@" in model_ref:
        name, alias = model_ref.split("@", 1)
        if not name or not alias:
            raise BadInputError(f"bad model reference {model_ref!r}; use NAME@alias or NAME/V")
        return name, alias, None
    for sep in ("/", ":"):
        if sep in model_ref:
            name, version = model_ref.rsplit(sep, 1)
            if not name or not version.isdigit():
                raise BadInputError(f"bad model reference {model_ref!r}; "
                                    "use NAME@alias or NAME/V (V a version number)")
            return name, None, version
    return model_ref, "champion", None


def client_for(settings: Any):
    """An MlflowClient on the settings' store (or ``settings`` itself when it is a client)."""
    import mlflow

    if isinstance(settings, mlflow.MlflowClient):
        return settings
    from medml import tracking

    tracking.point(settings)
    return mlflow.MlflowClient(settings.mlflow_uri, settings.mlflow_uri)


def resolve(settings: Any, model_ref: str):
    """The ``ModelVersion`` a reference (``NAME@alias``, ``NAME/V``, ``NAME``) names."""
    client = client_for(settings)
    name, alias, version = parse_ref(model_ref)
    if alias is None:
        return _version(client, name, version)
    _model(client, name)
    return alias_target(client, name, alias, required=True)


def version(settings: Any, name: str, version: str | int | None = None):
    """Version ``version`` of model ``name`` (the latest when None); NotFoundError naming
    what is missing."""
    client = client_for(settings)
    if version is not None:
        _model(client, name)
        return _version(client, name, str(version))
    import mlflow

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except mlflow.exceptions.MlflowException as exc:
        raise NotFoundError(f"model {name!r} is not registered") from exc
    if not versions:
        _model(client, name)
        raise NotFoundError(f"model {name!r} has no registered version")
    return max(versions, key=lambda v: int(v.version))


def _version(client, name: str, version: str):
    import mlflow

    try:
        return client.get_model_version(name, version)
    except mlflow.exceptions.MlflowException as exc:
        raise NotFoundError(f"model {name!r} has no version {version}") from exc


def alias_target(settings: Any, name: str, alias: str, *, required: bool = False):
    """The version ``name@alias`` points at; None (or NotFoundError if ``required``)
    when the alias is not set."""
    import mlflow

    client = client_for(settings)
    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException as exc:
        if required:
            raise NotFoundError(f"model {name!r} has no alias {alias!r}") from exc
        return None


def champion(settings: Any, name: str):
    """The version ``name@champion`` points at, or None."""
    return alias_target(settings, name, "champion")


def exists(settings: Any, name: str) -> bool:
    """Whether model ``name`` is registered."""
    import mlflow

    try:
        client_for(settings).get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        return False
    return True


def default_who() -> str:
    """The OS user, or ``unknown`` where there is none (some containers)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _model(client, name: str):
    import mlflow

    try:
        return client.get_registered_model(name)
    except mlflow.exceptions.MlflowException as exc:
        raise NotFoundError(f"model {name!r} is not registered") from exc


def _events(tags: dict[str, str], name: str) -> list[dict]:
    events = []
    for key, value in tags.items():
        if not key.startswith(PREFIX):
            continue
        try:
            event = json.loads(value)
            event["seq"] = int(event.get("seq", key[len(PREFIX):]))
        except (ValueError, TypeError, AttributeError):
            log.warning("model %r: unreadable alias history entry %s", name, key)
            continue
        events.append(event)
    events.sort(key=lambda e: (e["seq"], e.get("at") or ""))
    return events


def _next_seq(tags: dict[str, str]) -> int:
    seqs = [int(k[len(PREFIX):]) for k in tags
            if k.startswith(PREFIX) and k[len(PREFIX):].isdigit()]
    return max(seqs, default=0) + 1


def alias_history(settings: Any, name: str, alias: str | None = None) -> list[dict]:
    """The alias moves of model ``name``, oldest first (only those of ``alias`` if given)."""
    events = _events(_model(client_for(settings), name).tags, name)
    return [e for e in events if alias is None or e.get("alias") == alias]


def _append(client, name: str, event: dict) -> dict:
    """Write ``event`` under the next free key; never overwrite an existing one."""
    payload = dict(event)
    for _ in range(20):
        tags = _model(client, name).tags
        payload["seq"] = _next_seq(tags)
        key = f"{PREFIX}{payload['seq']:06d}"
        value = json.dumps(payload, separators=(",", ":"))
        client.set_registered_model_tag(name, key, value)
        if _model(client, name).tags.get(key) == value:
            return payload
        # Another writer took the same key at the same moment: ours lost; append again.
    raise MedMLError(f"model {name!r}: could not append to the alias history "
                     "(concurrent writers); try again")


def set_alias(settings: Any, name: str, alias: str, version: str | int, *,
              who: str | None = None, why: str = "", decision_id: str | None = None,
              action: str = "set") -> dict:
    """Point ``name@alias`` at ``version`` and append the move to the history (both or
    neither: when the history cannot be written the alias is put back). Returns the event."""

    client = client_for(settings)
    model = _model(client, name)
    _version(client, name, str(version))
    current = (model.aliases or {}).get(alias)
    event = {"seq": 0, "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
             "who": (who or default_who())[:200], "alias": alias,
             "from_version": str(current) if current is not None else None,
             "to_version": str(version), "why": why or "", "decision_id": decision_id,
             "action": action}
    room = MAX_VALUE - len(json.dumps(event | {"why": ""}, separators=(",", ":")))
    if len(json.dumps(event["why"])) > room:  # keep the whole event in one tag value
        event["why"] = event["why"][:max(0, room // 2 - 3)] + "..."
    client.set_registered_model_alias(name, alias, str(version))
    try:
        return _append(client, name, event)
    except Exception:
        if current is None:
            client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, str(current))
        raise


def served_at(settings: Any, name: str, when: datetime, alias: str = "champion"
              ) -> str | None:
    """The version ``name@alias`` pointed at, at time ``when`` (None before the first move;
    a naive ``when`` is taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    version = None
    for e in alias_history(settings, name, alias):
        if datetime.fromisoformat(e["at"]) <= when:
            version = e["to_version"]
    return version


def champion_lineage(events: list[dict], current: str | None) -> list[str]:
    """The stack of champions the history builds, newest last: a promotion pushes its
    version, a rollback pops the version it rolled back from. So rolling back twice after
    v1 -> v2 -> v3 returns to v1 (never back to the rolled-back v3)."""
    stack: list[str] = []
    for e in events:
        if e.get("alias") != "champion":
            continue
        to = str(e["to_version"])
        if (e.get("action") == "rollback" and stack
                and stack[-1] == str(e.get("from_version"))):
            stack.pop()
        if not stack or stack[-1] != to:
            stack.append(to)
    if current is not None and (not stack or stack[-1] != str(current)):
        stack.append(str(current))  # the alias was moved outside MedML: start from it
    return stack


def rollback(settings: Any, name: str, *, who: str | None = None, why: str = "") -> dict:
    """Move ``champion`` back to the version that was champion before the current one;
    MedMLError when there is none. The move is recorded in the history (``action``
    ``rollback``). Returns the event."""
    client = client_for(settings)
    model = _model(client, name)
    current = (model.aliases or {}).get("champion")
    if current is None:
        raise MedMLError(f"model {name!r} has no champion; nothing to roll back")
    stack = champion_lineage(_events(model.tags, name), str(current))
    if len(stack) < 2:
        raise MedMLError(f"model {name!r}: version {current} is the first champion; "
                         "there is no previous champion to roll back to")
    previous = stack[-2]
    return set_alias(client, name, "champion", previous, who=who,
                     why=f"rollback from version {current}" + (f": {why}" if why else ""),
                     action="rollback")
