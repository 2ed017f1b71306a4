"""Derived data kept on disk between runs: :func:`cached` and the key of a list of crystals, :func:`structures_digest`.

Files live in ``symviz.train.cache_dir()/<folder>`` (``~/.cache/symviz`` or ``$SYMVIZ_CACHE``), named by a hash of
everything the value depends on, so a changed input is a new file, never a stale hit. What is cached here is cheap to
recompute (a second or two per chapter: parsing the 4,764-structure matbench file, space groups of a few hundred
crystals), so a file that cannot be read is simply computed again and replaced.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["cached", "file_digest", "source_digest", "structures_digest"]

_FORMATS = {
    "json": (lambda v: json.dumps(v).encode(), lambda b: json.loads(b)),
    "pickle": (lambda v: pickle.dumps(v, pickle.HIGHEST_PROTOCOL), pickle.loads),
}


def cached(folder: str, kind: str, key: Any, compute: Callable[[], Any], fmt: str = "pickle") -> Any:
    """``compute()``, kept in ``cache_dir()/folder`` under a hash of ``key`` (anything JSON can write).

    ``fmt``: ``"json"`` for plain data (lists, dicts, numbers, strings), ``"pickle"`` for anything else (tensors,
    DataFrames; only ever read back from this user's own cache folder). The file is written to a temporary name and
    renamed, so a reader never sees half a file; one that cannot be read (truncated, another format) is recomputed.

    >>> import os, tempfile; before = os.environ.get("SYMVIZ_CACHE"); os.environ["SYMVIZ_CACHE"] = tempfile.mkdtemp()
    >>> cached("demo", "square", [3], lambda: 9, fmt="json"), cached("demo", "square", [3], lambda: -1, fmt="json")
    (9, 9)
    >>> _ = os.environ.pop("SYMVIZ_CACHE") if before is None else os.environ.update(SYMVIZ_CACHE=before)
    """
    from symviz.train import cache_dir

    if fmt not in _FORMATS:
        raise ValueError(f"cached: fmt must be one of {sorted(_FORMATS)}, got {fmt!r}")
    dumps, loads = _FORMATS[fmt]
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / folder / f"{kind}_{digest}.{fmt}"
    if path.exists():
        try:
            return loads(path.read_bytes())
        except Exception:   # noqa: BLE001 - a damaged or foreign file: compute again below
            pass
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(dumps(value))
    tmp.replace(path)
    return value


def file_digest(path: os.PathLike | str) -> str:
    """SHA-1 of a data file's bytes, for a cache key; remembered per (path, size, modification time) in this process,
    so a chapter that loads from the same file several times reads and hashes it once."""
    st = os.stat(path)
    return _file_digest(os.fspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha1(fh.read()).hexdigest()


def structures_digest(structures: Sequence[Any]) -> str:
    """A hash of pymatgen structures' lattices, fractional coordinates and species (what every descriptor and graph
    of them depends on), in order."""
    h = hashlib.sha1()
    for s in structures:
        species = [str(sp) for sp in s.species] if s.is_ordered else [str(site.species) for site in s]
        h.update(np.ascontiguousarray(s.lattice.matrix, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(s.frac_coords, dtype=np.float64).tobytes())
        h.update(json.dumps(species).encode())
    return h.hexdigest()


def source_digest(*modules: Any, packages: Sequence[str] = ()) -> str:
    """A hash of the source files of ``modules`` (module objects or names) and of the installed versions of
    ``packages`` (distribution names): put it in a cache key so that a change to the code that computes a cached
    value, ours or a library's, makes a new entry instead of reading a stale one."""
    import importlib
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha1()
    for m in modules:
        m = importlib.import_module(m) if isinstance(m, str) else m
        with open(m.__file__, "rb") as fh:
            h.update(fh.read())
    for name in packages:
        try:
            h.update(f"{name}=={version(name)};".encode())
        except PackageNotFoundError:
            h.update(f"{name} missing;".encode())
    return h.hexdigest()
