"""Which input a face-box entry belongs to: the one matching rule of `--boxes` sidecars and of
the API's box mappings (``Reconstructor.reconstruct(..., boxes=)``).

A run's inputs each have a NAME (a file's path as given: the file named on the command line
or in the API, or a file found in a folder or by a pattern, written as that argument joined
with the path below it; an in-memory input's name: a (name, array) pair's name, "<array 0>")
and, for a file found in a folder or by a pattern, the FOLDER it was found in (the folder
argument, or the pattern's leading folder). An entry's key K matches at the first of these
levels where it matches any input of the run:

1. the same file: K and the input's name are the same path once made absolute and
   normalised (``./``, ``..``, doubled slashes), K read relative to the working directory
   or, for a sidecar file, relative to the sidecar's folder (the sidecar beside the photos
   can name them by file name). K equal to the name as given is the simplest case.
2. below the folder given: K, a relative path, is the input's path below its folder
   (``a/img.jpg`` for ``album/a/img.jpg`` found in the folder argument ``album/``).
3. the end of a path: the input's path ends with K's components, whole ones (``img.jpg``,
   ``a/img.jpg``).

A key that matches two or more inputs at its level is ambiguous, and so is an input matched
by two or more keys: each input concerned fails with an error that names the key and the
candidates (for example ``img.jpg`` when the run reads ``album/a/img.jpg`` and
``album/b/img.jpg``: name them ``a/img.jpg`` and ``b/img.jpg``), and the run goes on.
Entries that match no input are listed in one warning (how many, the first few).

An input without an entry goes to the detector; where detection is off (the CLI's --boxes,
the API's detector=None) it fails, with the CLI's or the API's wording (`MatchedBoxes.missing`).

When the inputs are not known ahead (the API given a one-shot iterator, e.g. a generator, read
lazily), each input is matched alone by levels 1 and 2 (level 3 needs every input's name to
know that one alone ends with K), and no warning lists the unmatched entries.

Public API
----------
- ``match_boxes(boxes, inputs=None, *, base=None, option=None, warn=True) -> MatchedBoxes``
- ``MatchedBoxes.for_input(name, root=None) -> (key, boxes) | None``  (InputError when ambiguous or bad)
- ``MatchedBoxes.missing(source) -> str``  the "no face box" message
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Iterable

from engine.errors import InputError

log = logging.getLogger("engine.boxes")
_SHOWN = 5  # keys or inputs quoted in one message


def _absolute(path: str, base: str | None = None) -> str:
    p = os.fspath(path)
    if base is not None and not os.path.isabs(p):
        p = os.path.join(base, p)
    return os.path.normpath(os.path.abspath(p))


def _components(path: str) -> tuple[str, ...] | None:
    """A relative path's components after normalisation; None for an absolute path or one that
    climbs out ('..'), which can be neither below a folder nor the end of a path."""
    if os.path.isabs(path):
        return None
    norm = os.path.normpath(path)
    if os.altsep:
        norm = norm.replace(os.altsep, os.sep)
    parts = tuple(c for c in norm.split(os.sep) if c not in ("", "."))
    if not parts or parts[0] == "..":
        return None
    return parts


def _quote(names, total: int | None = None) -> str:
    names = list(names)
    total = len(names) if total is None else total
    shown = ", ".join(repr(n) for n in names[:_SHOWN])
    return shown + (f" and {total - _SHOWN} more" if total > _SHOWN else "")


class _Keys:
    """The keys of a box mapping, indexed by the forms the levels compare."""

    def __init__(self, keys: Iterable[str], base: str | None):
        self.same: dict[str, list[str]] = defaultdict(list)  # absolute form -> keys (level 1)
        self.parts: dict[tuple, list[str]] = defaultdict(list)  # components -> keys (levels 2, 3)
        for k in keys:
            if not isinstance(k, str):
                continue  # a caller's mapping may hold other keys; they can name no input
            forms = {_absolute(k)}
            if base is not None:
                forms.add(_absolute(k, base))
            for f in forms:
                self.same[f].append(k)
            parts = _components(k)
            if parts is not None:
                self.parts[parts].append(k)

    def level1(self, absolute: str) -> list[str]:
        return self.same.get(absolute, [])

    def level2(self, absolute: str, root: str | None) -> list[str]:
        if root is None:
            return []
        rel = os.path.relpath(absolute, _absolute(root))
        parts = _components(rel)
        return self.parts.get(parts, []) if parts is not None else []

    def level3(self, absolute: str) -> list[str]:
        comps = tuple(c for c in absolute.split(os.sep) if c)
        found: list[str] = []
        for n in range(1, len(comps) + 1):
            found.extend(self.parts.get(comps[-n:], ()))
        return found


class MatchedBoxes:
    """A box mapping matched to a run's inputs by the rule of this module.

    `for_input(name, root)` gives (key, boxes as the mapping holds them) for an input, None
    when no entry matches it, or raises InputError naming the input, the key(s) and the
    candidates when the match is ambiguous (and a sidecar's own error for a bad box).
    `complete` is True when every input of the run was known (levels 1-3); otherwise each
    input is matched alone by levels 1 and 2.
    """

    def __init__(self, boxes: Mapping, *, base: str | os.PathLike | None = None, option: str | None = None):
        self.boxes = boxes
        self.base = None if base is None else os.fspath(base)
        self.option = option  # the CLI's option ("--boxes"): its wording in messages; None: the API's
        path = getattr(boxes, "path", None)
        self.path = None if path is None else os.fspath(path)
        self.label = (f"{option} {path}" if option else f"boxes file {path}") if path is not None else "boxes"
        self._keys = _Keys(boxes.keys(), self.base)
        self._table: dict[str, tuple[str, object]] | None = None  # absolute name -> ("key", k) / ("error", text)
        self.unmatched: list[str] = []

    @property
    def complete(self) -> bool:
        return self._table is not None

    # -- matching ----------------------------------------------------------------------
    def _match_all(self, inputs: Iterable) -> None:
        """Levels 1-3 over every input of the run: each key takes the first level where it
        matches any input; builds the per-input table and the list of unmatched keys."""
        names: dict[str, str] = {}  # absolute -> the name first given (one file = one input)
        roots: dict[str, set] = defaultdict(set)
        for x in inputs:
            name, root = (x, None) if isinstance(x, (str, os.PathLike)) else x
            name = os.fspath(name)
            a = _absolute(name)
            names.setdefault(a, name)
            if root is not None:
                roots[a].add(os.fspath(root))
        hits: dict[str, list[set]] = defaultdict(lambda: [set(), set(), set()])  # key -> inputs per level
        for a in names:
            for k in self._keys.level1(a):
                hits[k][0].add(a)
            for r in roots.get(a, ()):
                for k in self._keys.level2(a, r):
                    hits[k][1].add(a)
            for k in self._keys.level3(a):
                hits[k][2].add(a)
        by_input: dict[str, list[str]] = defaultdict(list)
        ambiguous: dict[str, list[str]] = {}
        for k, levels in hits.items():
            chosen = next((lv for lv in levels if lv), set())
            for a in chosen:
                by_input[a].append(k)
            if len(chosen) > 1:
                ambiguous[k] = sorted(names[a] for a in chosen)
        self._table = {}
        for a, keys in by_input.items():
            bad = [k for k in keys if k in ambiguous]
            if bad:
                k = bad[0]
                self._table[a] = ("error", self._ambiguous_key(names[a], k, ambiguous[k], roots.get(a, ())))
            elif len(keys) > 1:
                self._table[a] = ("error", self._several_keys(names[a], keys))
            else:
                self._table[a] = ("key", keys[0])
        self.unmatched = [k for k in self.boxes.keys() if k not in hits]

    def _ambiguous_key(self, name: str, key: str, candidates: list[str], roots) -> str:
        # A key that would name this input alone: its path below the folder given, when that is
        # longer than the key, else its path as given.
        below = [os.path.relpath(_absolute(name), _absolute(r)).replace(os.sep, "/") for r in roots]
        better = next((b for b in below if len(_components(b) or ()) > len(_components(key) or ())), name)
        head = f"{name}: {self.label}: entry {key!r} matches {len(candidates)} inputs ({_quote(candidates)}), so it is used for none"
        if better in self.boxes:  # the input's own entry is there already: the short key is what to fix
            return f"{head}: this input's own entry {better!r} is there too; remove or rename the entry {key!r}"
        return f"{head}: name each file by a path that fits it alone (this one: {better!r})"

    def _several_keys(self, name: str, keys: list[str]) -> str:
        return (f"{name}: {self.label}: entries {_quote(keys)} all match this input: give its boxes under one "
                "name")

    def warn_unmatched(self) -> None:
        """One warning for the entries that match no input of the run (nothing when all match)."""
        if not self.unmatched:
            return
        n = len(self.unmatched)
        log.warning(f"{self.label}: {n} of its {len(self.boxes)} entries {'matches' if n == 1 else 'match'} no "
                    "input of this run: "
                    f"{_quote(self.unmatched, n)} (a key matches an input by the same path, relative to the "
                    "working directory or to the boxes file's folder, by its path below the folder given, or by "
                    "the end of its path when one input alone ends with it)")

    # -- lookup --------------------------------------------------------------------------
    def for_input(self, name: str | os.PathLike, root: str | os.PathLike | None = None):
        """(key, boxes as the mapping holds them) of the input `name` (found in folder `root`, if
        any); None when no entry matches it. InputError when the match is ambiguous."""
        name = os.fspath(name)
        a = _absolute(name)
        if self._table is not None:
            hit = self._table.get(a)
            if hit is None:
                return None
            kind, value = hit
            if kind == "error":
                raise InputError(value)
            return value, self.boxes[value]
        keys = self._keys.level1(a) or self._keys.level2(a, None if root is None else os.fspath(root))
        keys = list(dict.fromkeys(keys))
        if not keys:
            return None
        if len(keys) > 1:
            raise InputError(self._several_keys(name, keys))
        return keys[0], self.boxes[keys[0]]

    def missing(self, source: str) -> str:
        """The failure of an input without an entry when nothing else finds its faces."""
        if self.option:
            return (f"{source}: no face box for this input in {self.label}, and no detector runs with "
                    f"{self.option}: add its row, or run it without {self.option} (faces detected) or with "
                    "--cropped (the image is a face crop)")
        return missing_box_message(source, self.label if self.path is not None else None)

    def __repr__(self) -> str:
        return (f"<MatchedBoxes {self.label}: {len(self.boxes)} entries, "
                f"{'all inputs known' if self.complete else 'matched per input'}>")


def missing_box_message(source: str, label: str | None = None) -> str:
    """The API's wording for an input with no box where detection is off."""
    given = f" in {label}" if label else ""
    return (f"{source}: no face box given for this input{given} and detection is off (detector=None): "
            "pass boxes for it, or cropped=True")


def match_boxes(boxes: Mapping, inputs: Iterable | None = None, *, base: str | os.PathLike | None = None,
                option: str | None = None, warn: bool = True) -> MatchedBoxes:
    """Match the entries of `boxes` ({key: boxes}, e.g. a BoxSidecar) to a run's inputs.

    inputs: every input of the run, each a name or a (name, folder or None) pair (module
        docstring); None when they are not known ahead (each input is then matched alone).
    base: keys are also read relative to this folder (default: a sidecar's own folder).
    option: the CLI option the boxes came from ("--boxes"), for CLI wording; None: the API's.
    warn: log the one warning for entries that match no input (with `inputs`).
    """
    if not isinstance(boxes, Mapping):
        raise InputError(f"boxes: expected a mapping {{name: [box, ...]}} or a sidecar path, "
                         f"found {type(boxes).__name__}")
    if base is None and getattr(boxes, "path", None) is not None:
        base = Path(boxes.path).parent
    m = MatchedBoxes(boxes, base=base, option=option)
    if inputs is not None:
        m._match_all(inputs)
        if warn:
            m.warn_unmatched()
    return m
