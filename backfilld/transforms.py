"""Python transforms: finding the function, and calling it on a batch of rows.

Owns: resolving "module:function" or an entry point of the group "backfilld.transforms", calling the
function (sync or async) on each row's sources, and shaping what it returns into target values. The
batch loop (job.py) decides what to do with a row whose transform raised.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from backfilld.errors import ConfigError, TransformError

ENTRY_POINT_GROUP = "backfilld.transforms"


def load(ref: str) -> Callable[..., Any]:
    """The function named by "module:function", or registered under that name by an installed package."""
    if ":" in ref:
        module_name, _, attr = ref.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"transform {ref!r}: cannot import module {module_name!r} ({exc}); is it installed "
                              "in the same environment as backfilld?") from None
        except Exception as exc:  # noqa: BLE001 - a broken module raises anything on import
            raise ConfigError(f"transform {ref!r}: importing module {module_name!r} failed: "
                              f"{type(exc).__name__}: {exc}") from None
        fn = getattr(module, attr, None)
        if fn is None:
            raise ConfigError(f"transform {ref!r}: module {module_name!r} has no attribute {attr!r}")
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == ref]
        if not found:
            raise ConfigError(f"transform {ref!r}: no installed package registers it under the entry-point "
                              f"group {ENTRY_POINT_GROUP!r}; write \"module:function\" or install the package")
        try:
            fn = found[0].load()
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"transform {ref!r}: loading its entry point failed: {type(exc).__name__}: "
                              f"{exc}") from None
    if not callable(fn):
        raise ConfigError(f"transform {ref!r} is not callable")
    return fn


@dataclass(frozen=True)
class Outcome:
    """A row's new target values, or the error its transform raised."""

    values: tuple[Any, ...] | None
    error: str | None = None


class Transform:
    def __init__(self, ref: str, sources: Sequence[str], targets: Sequence[str]) -> None:
        self.ref = ref
        self.fn = load(ref)
        self.sources, self.targets = tuple(sources), tuple(targets)
        self.is_async = inspect.iscoroutinefunction(self.fn)

    def _shape(self, result: Any) -> tuple[Any, ...]:
        if isinstance(result, Mapping):
            unknown = set(result) - set(self.targets)
            if unknown:
                raise TransformError(f"returned unknown target {sorted(unknown)[0]!r}; targets are "
                                     f"{list(self.targets)}")
            return tuple(result.get(t) for t in self.targets)
        if len(self.targets) == 1 and not isinstance(result, (tuple, list)):
            return (result,)
        if isinstance(result, (tuple, list)) and len(result) == len(self.targets):
            return tuple(result)
        raise TransformError(f"returned {type(result).__name__}; return a mapping of target -> value "
                             f"(targets {list(self.targets)})")

    async def apply(self, source_rows: Sequence[Sequence[Any]]) -> list[Outcome]:
        """One Outcome per row; an exception in the function becomes that row's error, never the batch's."""
        out: list[Outcome] = []
        for values in source_rows:
            row = dict(zip(self.sources, values, strict=True))
            try:
                result = await self.fn(row) if self.is_async else self.fn(row)
                out.append(Outcome(self._shape(result)))
            except Exception as exc:  # noqa: BLE001 - a user's function may raise anything
                out.append(Outcome(None, f"{type(exc).__name__}: {exc}"))
        return out
