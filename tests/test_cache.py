"""symviz.data.cache: derived data kept on disk, keyed by everything it depends on."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from symviz.data.cache import cached, file_digest, source_digest, structures_digest


def test_cached_computes_once_then_reads_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return {"a": [1, 2.5, "x"]}

    for fmt in ("json", "pickle"):
        assert cached("t", "thing", [1, "k"], compute, fmt=fmt) == {"a": [1, 2.5, "x"]}
        assert cached("t", "thing", [1, "k"], compute, fmt=fmt) == {"a": [1, 2.5, "x"]}
    assert len(calls) == 2, "once per format"
    assert cached("t", "thing", [2, "k"], lambda: "other key", fmt="json") == "other key"
    assert sorted(p.suffix for p in (tmp_path / "t").iterdir()) == [".json", ".json", ".pickle"]


def test_a_damaged_cache_file_is_computed_again_and_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path))
    cached("t", "v", [0], lambda: np.arange(3))
    (path,) = (tmp_path / "t").iterdir()
    path.write_bytes(b"\x80 not a pickle")
    assert np.array_equal(cached("t", "v", [0], lambda: np.arange(4)), np.arange(4))
    assert np.array_equal(cached("t", "v", [0], lambda: pytest.fail("recomputed")), np.arange(4))


def test_cached_refuses_an_unknown_format(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="fmt must be one of"):
        cached("t", "v", [0], lambda: 1, fmt="yaml")


def test_structures_digest_sees_lattice_coordinates_species_and_order():
    from pymatgen.core import Lattice, Structure

    def nacl(a=5.64, x=0.5, b="Cl"):
        return Structure(Lattice.cubic(a), ["Na", b], [[0, 0, 0], [x, 0.5, 0.5]])

    base = structures_digest([nacl(), nacl(a=4.0)])
    assert structures_digest([nacl(), nacl(a=4.0)]) == base
    for other in ([nacl(a=5.65), nacl(a=4.0)], [nacl(x=0.49), nacl(a=4.0)], [nacl(b="Br"), nacl(a=4.0)],
                  [nacl(a=4.0), nacl()], [nacl()]):
        assert structures_digest(other) != base


def test_source_digest_follows_the_code_and_the_package_versions(tmp_path, monkeypatch):
    mod = tmp_path / "symviz_cache_probe.py"
    mod.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import symviz_cache_probe

    first = source_digest(symviz_cache_probe)
    assert source_digest("symviz_cache_probe") == first
    mod.write_text("X = 2\n")
    assert source_digest(symviz_cache_probe) != first
    assert source_digest(symviz_cache_probe, packages=("numpy",)) != source_digest(symviz_cache_probe)
    assert source_digest(symviz_cache_probe, packages=("no-such-package-here",)) != source_digest(symviz_cache_probe)
    sys.modules.pop("symviz_cache_probe", None)


def test_file_digest_is_the_sha1_of_the_bytes_and_follows_a_rewritten_file(tmp_path):
    import hashlib
    import os

    f = tmp_path / "data.bin"
    f.write_bytes(b"first")
    assert file_digest(f) == file_digest(str(f)) == hashlib.sha1(b"first").hexdigest()
    f.write_bytes(b"second, longer")
    os.utime(f, ns=(1, 1))                    # a different size and modification time: hashed again
    assert file_digest(f) == hashlib.sha1(b"second, longer").hexdigest()
    with pytest.raises(FileNotFoundError):
        file_digest(tmp_path / "missing.bin")
