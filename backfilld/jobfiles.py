"""Jobs files: [[jobs]] shipped apart from the site's config, by the package or extension whose schema change
they complete.

Owns: what a jobs file may hold at its top level ([[jobs]] and an optional [package] header, nothing of the
site's), finding the files a config names (paths and globs, relative to the file that names them; `--jobs`
files relative to the working directory), where each job was defined (Origin), the checks that span files
(a job name defined twice, an `after` naming no job or going round in a cycle) and the order jobs run in.
Validating a job's own keys is config.JobConfig's, and config.py calls in here: this module imports nothing of
backfilld's but the error tree.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

from backfilld.errors import ConfigError

# what a jobs file may hold at its top level: anything else is the site's business (or a typo)
SECTIONS = ("package", "jobs")
# the keys of its [package] header
HEADER = ("name", "version")

# The value types here are NamedTuples, not dataclasses: every command imports this module (config.py does),
# and a NamedTuple costs a fifth of a frozen dataclass's time to define (0.14 ms against 0.76 ms), which `status`
# would pay on every start (tests/unit/test_startup_imports.py, benchmarks/bench_startup.py).


class Origin(NamedTuple):
    """Where a job was defined: the file, its place in that file's [[jobs]], and the [package] that ships it."""

    file: str
    position: int | None   # its index in the file's [[jobs]]; None: a job made in code, not read from a file
    package: str | None = None
    version: str | None = None
    jobs_file: bool = False   # defined in a jobs file, not in the site config (nor in code)

    def where(self, key: str | None = None) -> str:
        """The job's (or one of its keys') location, as errors name it: "backfills.toml: jobs[1].after"."""
        place = "jobs" if self.position is None else f"jobs[{self.position}]"
        return f"{self.file}: {place}" + (f".{key}" if key else "")

    def described(self) -> str:
        """"backfills.toml (jobs[1], shipped by Echo 1.2.0)", for messages naming where two things are."""
        place = "" if self.position is None else f"jobs[{self.position}]"
        shipped = f"shipped by {self.shipped_by}" if self.shipped_by else ""
        inside = ", ".join(p for p in (place, shipped) if p)
        return self.file + (f" ({inside})" if inside else "")

    @property
    def shipped_by(self) -> str | None:
        """"Echo 1.2.0", from the file's [package] header; None without one."""
        if self.package is None:
            return None
        return f"{self.package} {self.version}" if self.version else self.package

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "jobs_file": self.jobs_file, "package": self.package, "version": self.version}


class Defined(Protocol):
    """A job as the checks and the ordering see it (config.JobConfig)."""

    @property
    def name(self) -> str: ...

    @property
    def after(self) -> Sequence[str]: ...

    @property
    def origin(self) -> Origin: ...


J = TypeVar("J", bound=Defined)


# ------------------------------------------------------------------------------------------ finding the files


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


class Found(NamedTuple):
    """The jobs files a config names, in the order it names them (a glob's matches sorted by path), each once."""

    paths: list[Path]
    unmatched: list[tuple[str, str]]   # (glob, the file naming it) for each glob that matched no file


def find(named: Sequence[tuple[str, Path, str]]) -> Found:
    """The files named by each (path or glob, the directory it is relative to, who names it, for messages).

    A literal path must name a file: ConfigError otherwise. A glob may match nothing (an extensions folder
    where no extension ships a backfill yet): it is reported in Found.unmatched, for a warning."""
    found = Found([], [])
    seen: set[Path] = set()
    for pattern, base, named_by in named:
        target = base / os.path.expanduser(pattern)
        if is_glob(pattern):
            # imported here: a config without globs (every command imports this module) does not pay for it
            import glob

            matches = sorted(Path(p) for p in glob.glob(str(target), recursive=True) if Path(p).is_file())
            if not matches:
                found.unmatched.append((pattern, named_by))
        else:
            if not target.is_file():
                what = "is not a file" if target.exists() else "no such jobs file"
                raise ConfigError(f"{named_by}: {target}: {what}")
            matches = [target]
        for path in matches:
            real = path.resolve()
            if real not in seen:   # named twice (a literal path and a glob): read once
                seen.add(real)
                found.paths.append(path)
    return found


class Content(NamedTuple):
    """A jobs file as read: its header's package and version, and its [[jobs]] as data (config.JobConfig's to
    validate)."""

    package: str | None
    version: str | None
    jobs: list[Any]


def read(path: Path) -> Content:
    """The file, holding only SECTIONS, with a valid header: ConfigError naming the file and every problem
    otherwise."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the jobs file ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nests arrays or tables too deeply to be a jobs file") from None
    problems = [f"{_shown(k, data[k])}: does not belong in a jobs file, which holds [[jobs]] and an optional "
                "[package] header (name, version); the site's settings ([database], [[replicas]], [throttle], "
                "[metrics], [state], [logging], jobs_files) stay in its config" for k in data if k not in SECTIONS]
    header = data.get("package", {})
    if not isinstance(header, dict):
        problems.append("package: must be a [package] table (name, version)")
        header = {}
    problems += [f"package.{_shown(k, None)}: unknown key (check its spelling against config/example-jobs.toml)"
                 for k in header if k not in HEADER]
    if "name" not in header and isinstance(data.get("package"), dict):
        problems.append("package.name: is required")
    for key in HEADER:
        if key in header and not _header_text(header[key]):
            problems.append(f"package.{key}: must be 1-100 printable characters, without leading or trailing spaces")
    jobs = data.get("jobs", [])
    if not isinstance(jobs, list):
        problems.append("jobs: must be an array of tables, each one [[jobs]]")
    if problems:
        raise ConfigError("\n".join([f"{path}: invalid jobs file", *(f"  {p}" for p in problems)]))
    return Content(header.get("name"), header.get("version"), jobs)


def _header_text(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 100 and value.isprintable() and value.strip() == value


def _shown(key: str, value: object) -> str:
    """A top-level key as it is written: [table], [[array of tables]], or key."""
    name = key if len(key) <= 40 else key[:37] + "..."
    if isinstance(value, dict):
        return f"[{name}]"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return f"[[{name}]]"
    return name


# ------------------------------------------------------------------------------------------ across files


def problems(jobs: Sequence[Defined]) -> list[str]:
    """What is wrong across all the jobs: a name defined twice (naming both places), an `after` naming the job
    itself or no job, and `after` cycles. Each names the file, the job and the key."""
    out: list[str] = []
    first: dict[str, Defined] = {}
    for job in jobs:
        if job.name in first:
            out.append(f"two jobs are named {job.name!r}: in {first[job.name].origin.described()} and in "
                       f"{job.origin.described()}; job names must be unique across the config and its jobs files: "
                       "rename one")
        else:
            first[job.name] = job
    for job in jobs:
        for dep in job.after:
            if dep == job.name:
                out.append(f"{_at(job)}: names the job itself")
            elif dep not in first:
                known = ", ".join(first) or "none"
                out.append(f"{_at(job)}: names {dep!r}, which is no job of the config or its jobs files "
                           f"(jobs: {known})")
    out.extend(_cycles(first))
    return out


def _at(job: Defined) -> str:
    return f"{job.origin.where('after')} (job {job.name!r})"


def _cycles(by_name: dict[str, Defined]) -> list[str]:
    """Each cycle of `after` once, as a path: a -> b -> a."""
    out: list[str] = []
    state: dict[str, bool] = {}   # False while on the path being walked, True once every job after it is walked

    def visit(name: str, path: list[str]) -> None:
        state[name] = False
        path.append(name)
        for dep in by_name[name].after:
            if dep not in by_name or dep == name:   # reported by problems() on their own
                continue
            if state.get(dep) is False:
                cycle = [*path[path.index(dep):], dep]
                out.append(f"{_at(by_name[cycle[0]])}: the jobs wait for each other in a cycle, so none of them "
                           "could start: " + " -> ".join(f"{n} ({by_name[n].origin.file})" for n in cycle)
                           + "; remove one of these after entries")
            elif dep not in state:
                visit(dep, path)
        path.pop()
        state[name] = True

    for name in by_name:
        if name not in state:
            visit(name, [])
    return out


def run_order(jobs: Iterable[J]) -> list[J]:
    """The jobs in the order they run: as given (the config's own, then each jobs file's in turn, each in file
    order), except that a job runs after the jobs among them that its `after` names (a stable topological
    order: a job moves back only as far as it must). `after` names outside the jobs given are left to the
    daemon, which checks them in the state table. Assumes no cycle (problems() reports them)."""
    pending = list(jobs)
    names = {j.name for j in pending}
    placed: set[str] = set()
    out: list[J] = []
    while pending:
        for i, job in enumerate(pending):
            if all(dep in placed or dep not in names or dep == job.name for dep in job.after):
                out.append(pending.pop(i))
                placed.add(job.name)
                break
        else:   # a cycle after all: keep the given order rather than loop
            out.extend(pending)
            break
    return out
