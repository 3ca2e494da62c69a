"""One registry mechanism for methods, datasets, classifiers, metrics and networks.

Modelled on lm-evaluation-harness' registry and timm's `register_model`: plugins are
registered with a decorator, in-tree plugins are listed lazily as ``module:attr``
strings with their one-line metadata (so listing never imports torch-heavy code), and
third-party packages add theirs through an entry-point group. A name can also be
*planned* (`Registry.plan`): not runnable, but asking for it says so instead of
"did you mean"; a plugin that registers the name replaces the plan.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

from cfbench.errors import CfbenchError


@dataclass
class Entry:
    """A registered name: its target (``module:attr`` or the object) and its metadata."""

    name: str
    target: Any
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def loaded(self) -> bool:
        return not isinstance(self.target, str)


class Registry:
    """Name → plugin table.

    ``kind`` names what is registered ("method", "dataset", …) in messages;
    ``group`` is the entry-point group third-party packages use (``cfbench.methods``).
    """

    def __init__(self, kind: str, group: str | None = None):
        self.kind = kind
        self.group = group
        self._entries: dict[str, Entry] = {}
        self._planned: dict[str, str] = {}
        self._entry_points_scanned = group is None

    # -- registration -------------------------------------------------------------
    def lazy(self, name: str, target: str, **meta: str) -> None:
        """Register ``module:attr`` without importing it; ``meta`` is what listing shows."""
        self._add(Entry(name, target, dict(meta)))

    def plan(self, name: str, note: str) -> None:
        """Reserve ``name`` for a plugin not written yet; ``note`` (one sentence) is what a
        user asking for it reads. Any registration of ``name`` takes precedence."""
        self._planned[name] = note.strip().rstrip(".")

    def planned(self) -> dict[str, str]:
        """Planned names that nothing has registered yet -> their notes."""
        self._scan_entry_points()
        return {name: note for name, note in sorted(self._planned.items()) if name not in self._entries}

    def register(self, name: str, **meta: str) -> Callable[[Any], Any]:
        """Decorator: ``@METHODS.register("dime")``. Fills a lazy entry of that name."""

        def decorator(obj: Any) -> Any:
            entry = self._entries.get(name)
            if entry is not None and entry.loaded and entry.target is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if entry is None:
                self._entries[name] = Entry(name, obj, dict(meta))
            else:
                entry.target = obj
                entry.meta = {**meta, **entry.meta}
            return obj

        return decorator

    def _add(self, entry: Entry) -> None:
        if entry.name in self._entries:
            raise ValueError(f"{self.kind} {entry.name!r} is registered twice")
        self._entries[entry.name] = entry

    def _scan_entry_points(self) -> None:
        if self._entry_points_scanned:
            return
        self._entry_points_scanned = True
        for ep in entry_points(group=self.group):
            if ep.name not in self._entries:
                self._entries[ep.name] = Entry(ep.name, ep.value, {"source": ep.dist.name if ep.dist else ""})

    # -- lookup -------------------------------------------------------------------
    def names(self) -> list[str]:
        self._scan_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._scan_entry_points()
        return name in self._entries

    def entry(self, name: str) -> Entry:
        """The entry of ``name``, unloaded; an unknown name gets a "did you mean", a planned
        one its note."""
        self._scan_entry_points()
        if name not in self._entries and name in self._planned:
            known = ", ".join(sorted(self._entries)) or "none"
            raise CfbenchError(
                f"{self.kind} {name!r} is not available yet: {self._planned[name]}; registered {self.kind}s: {known}."
            )
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            known = ", ".join(sorted(self._entries)) or "none"
            raise CfbenchError(f"Unknown {self.kind} {name!r}.{hint} Known: {known}.")
        return self._entries[name]

    def get(self, name: str) -> Any:
        """The registered object, importing its module on first use."""
        entry = self.entry(name)
        if not entry.loaded:
            module_name, _, attr = entry.target.partition(":")
            module = importlib.import_module(module_name)
            if not entry.loaded:  # the module's decorator did not fill it: take the attribute
                entry.target = getattr(module, attr)
        return entry.target

    def describe(self, name: str) -> dict[str, str]:
        """Listing metadata; for a third-party plugin it is read from the loaded object."""
        entry = self.entry(name)
        meta = dict(entry.meta)
        if "description" not in meta:
            obj = self.get(name)
            doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
            meta["description"] = doc[0] if doc else ""
            for key in ("paper", "access"):
                if getattr(obj, key, None):
                    meta[key] = str(getattr(obj, key))
        return meta
