"""dbt in the run's own process, with the project parsed once per process.

dagster-dbt runs every dbt invocation as a new ``dbt`` process: each one imports dbt (~2.3 s here) and reads its
partial parse (~1.3 s) before it builds anything, which was most of a small shop's dbt steps (a graph run makes
five invocations, a daily run three; measured on the demo: 1.1 s in-process against 8-11 s for the staging step).
Here the invocation that dagster-dbt starts is dbt's own programmatic runner (``dbtRunner``) on a thread of this
process, fed the project parsed once (dbt's documented reuse of a parsed manifest), and it streams the same JSON
log lines a ``dbt`` process prints: dagster-dbt turns them into materializations and asset checks exactly as
before, so nothing else changes.

What makes the parse reusable: the vars that come from the settings are part of the cache key (other settings, a
new parse), except the two only the profile reads (``PROFILE_ONLY_VARS``: where the warehouse is), so one parse
serves every home; what each run decides reaches dbt in the environment, read only when dbt executes
(macros/as_of.sql), never when it parses. The project's files are part of the key too (a model edited while a
process lives).

dbt's event manager and dbt-duckdb's connection are process-wide: one in-process invocation runs at a time
(``_ONE_AT_A_TIME``; the jobs run their steps one after another anyway, and the dbt assets share a pool)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import dagster_dbt.core.resource as _dbt_resource
from dagster_dbt.core.dbt_cli_invocation import DbtCliInvocation

from dagster_project.settings import dbt_source_stamps

PARTIAL_PARSE = "partial_parse.msgpack"
# the levels a `dbt` process prints by default (info): the result lines dagster-dbt reads are among them; the
# debug events go only to the invocation's dbt.log, as before
_PRINTED_LEVELS = frozenset({"info", "warn", "error"})
# dbt's console stays quiet in-process (the lines go to dagster-dbt instead); its file log is written as before
_QUIET = ["--log-level", "none", "--log-level-file", "debug"]
_ONE_AT_A_TIME = threading.Lock()
# The vars only dbt/profiles.yml reads (where the warehouse is, how much memory DuckDB may take), with the fixed
# value the project is parsed with. No model reads them, so the parse is the same for any value, but dbt's
# partial-parse state includes the profile's connection: parsed with a home's own values, a parse was useless to any
# other home (each new or copied home parsed in full: ~5 s), and a process moving to another home parsed again.
# Each invocation still runs with the home's values (its --vars, and the profile they render). The file name is
# kept: dbt-duckdb names the database after it, and the parsed nodes carry that name.
PROFILE_ONLY_VARS = {"warehouse_path": lambda path: f"/shopcast-parse/{Path(path).name}",
                     "duckdb_memory_limit": lambda _limit: "1GB"}
_parsed: tuple[tuple, Any] | None = None  # (what the parse depends on, the parsed manifest): one at a time


@dataclass(frozen=True)
class InProcessDbt:
    """How ShopcastDbt asks for an in-process invocation: the variables dbt reads from the environment for this
    invocation alone, and the folder where a process's first invocation parses the project."""

    environment: Mapping[str, str]
    parse_folder: Path
    after: Callable[[], object] | None = None  # run when dbt succeeded, before the invocation ends (engine=spark)


_REQUESTED: ContextVar[InProcessDbt | None] = ContextVar("shopcast_dbt_in_process", default=None)


@contextlib.contextmanager
def in_process(request: InProcessDbt) -> Iterator[None]:
    """dbt invocations started within run in this process (see the module's docstring)."""
    token = _REQUESTED.set(request)
    try:
        yield
    finally:
        _REQUESTED.reset(token)


class _Lines:
    """The ``stdout`` of the invocation, as dagster-dbt reads a process's: JSON log lines, until dbt ends."""

    def __init__(self) -> None:
        self.queue: queue.Queue[bytes | None] = queue.Queue()
        self.closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.closed = True

    def __iter__(self) -> Iterator[bytes]:
        while (line := self.queue.get()) is not None:
            yield line


class DbtThread:
    """dbt's runner on a thread, standing where dagster-dbt keeps its ``subprocess.Popen``: ``args``, ``stdout``,
    ``wait``, ``returncode``, ``send_signal``."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], request: InProcessDbt) -> None:
        self.args = list(args)
        self.returncode: int | None = None
        self.stdout = _Lines()
        # what dagster-dbt put in the process's environment (target and log folders, project and profiles
        # folders, log format, indirect selection), and the run's variables
        self._environment = {**{k: v for k, v in env.items() if os.environ.get(k) != v}, **request.environment}
        self._request = request
        self._thread = threading.Thread(target=self._invoke, name="dbt", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> int | None:
        self._thread.join(timeout)
        return self.returncode

    def send_signal(self, _signal) -> None:
        """A terminated run: dbt's runner cannot be interrupted from outside; the build in flight finishes (or
        dies with the process), each model in its own transaction."""

    def _print(self, event) -> None:  # dbt calls it synchronously, for every event, on its own threads
        if event.info.level in _PRINTED_LEVELS:
            self.stdout.queue.put(json.dumps(self._to_dict(event)).encode())

    def _error(self, message: str) -> None:
        self.stdout.queue.put(json.dumps({"info": {"level": "error", "msg": message, "name": "InProcessError"},
                                          "data": {}}).encode())

    def _invoke(self) -> None:
        try:
            with _ONE_AT_A_TIME, _environment(self._environment):
                from dbt.cli.main import dbtRunner
                from dbt_common.events.functions import msg_to_dict

                self._to_dict = msg_to_dict
                manifest = _parsed_manifest(self.args, self._request.parse_folder)
                try:
                    result = dbtRunner(manifest=manifest, callbacks=[self._print]).invoke([*self.args[1:], *_QUIET])
                finally:
                    _release_warehouse()
                if result.success and self._request.after is not None:
                    self._request.after()
            if result.exception is not None:
                self._error(f"dbt raised {type(result.exception).__name__}: {result.exception}")
            self.returncode = 0 if result.success else (2 if result.exception is not None else 1)
        except BaseException as exc:  # noqa: BLE001 - a thread cannot raise to the step: the step fails on this line
            self._error(f"dbt could not run in-process: {type(exc).__name__}: {exc}")
            self.returncode = 2
        finally:
            self.stdout.queue.put(None)


def _release_warehouse() -> None:
    """Close the warehouse dbt-duckdb opened: it keeps its database open until the process exits, and DuckDB
    refuses the run's own connections (read-only, other settings) to a file already open in the process."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        if DuckDBConnectionManager._ENV is not None:
            DuckDBConnectionManager._ENV.close()
            DuckDBConnectionManager._ENV = None


def _option(args: Sequence[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def _parse_vars(args: Sequence[str]) -> str | None:
    """The invocation's --vars with fixed values in place of those only the profile reads (see
    ``PROFILE_ONLY_VARS``)."""
    given = _option(args, "--vars")
    if given is None:
        return None
    values = json.loads(given)
    for name, fixed in PROFILE_ONLY_VARS.items():
        if name in values:
            values[name] = fixed(values[name])
    return json.dumps(values, sort_keys=True)


def _parsed_manifest(args: Sequence[str], parse_folder: Path):
    """The project parsed with these args' vars (the profile's own with fixed values) and profile, once per
    process (a parse of its own, in ``parse_folder``, starting from the newest partial parse beside it: ~0.4 s)."""
    from dbt.cli.main import dbtRunner

    project_dir = Path(os.environ["DBT_PROJECT_DIR"])
    profile_args = [a for name in ("--profile", "--target") if (v := _option(args, name)) for a in (name, v)]
    parse_vars = _parse_vars(args)
    key = (str(project_dir), os.environ.get("DBT_PROFILES_DIR"), parse_vars, *profile_args,
           dbt_source_stamps(project_dir))
    global _parsed
    if _parsed is None or _parsed[0] != key:
        folder = parse_folder / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}-parse"
        folder.mkdir(parents=True)
        earlier = sorted((p for p in parse_folder.glob(f"*-parse/{PARTIAL_PARSE}")), key=lambda p: p.parent.name)
        if earlier:
            shutil.copy(earlier[-1], folder / PARTIAL_PARSE)
        vars_args = ["--vars", parse_vars] if parse_vars else []
        parsed = dbtRunner().invoke(["parse", *vars_args, *profile_args, "--target-path", str(folder),
                                     "--log-path", str(folder), *_QUIET])
        if not parsed.success:
            raise RuntimeError(f"dbt parse failed (log: {folder / 'dbt.log'}): {parsed.exception}")
        _parsed = (key, parsed.result)  # a process parses again only when the project or a var changes
    return _parsed[1]


def forget_parse() -> None:
    """Drop the parse this process holds: the next invocation starts as a new process's first one does."""
    global _parsed
    _parsed = None


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class ShopcastDbtInvocation(DbtCliInvocation):
    """dagster-dbt's invocation, run in-process when ShopcastDbt asks for it (``in_process``), else as a process."""

    @classmethod
    def run(cls, args: Sequence[str], env: dict[str, str], manifest: Mapping[str, Any], dagster_dbt_translator,
            project_dir: Path, target_path: Path, raise_on_error: bool, context, adapter, cli_version,
            dbt_project=None) -> DbtCliInvocation:
        request = _REQUESTED.get()
        if request is None:
            return super().run(args=args, env=env, manifest=manifest, dagster_dbt_translator=dagster_dbt_translator,
                               project_dir=project_dir, target_path=target_path, raise_on_error=raise_on_error,
                               context=context, adapter=adapter, cli_version=cli_version, dbt_project=dbt_project)
        return cls(process=DbtThread(args, env, request), manifest=manifest, project=dbt_project,  # type: ignore[arg-type]
                   dagster_dbt_translator=dagster_dbt_translator, project_dir=project_dir, target_path=target_path,
                   raise_on_error=raise_on_error, context=context, adapter=adapter, cli_version=cli_version)


# DbtCliResource.cli starts its invocations through this name (dagster-dbt has no in-process mode of its own)
_dbt_resource.DbtCliInvocation = ShopcastDbtInvocation
