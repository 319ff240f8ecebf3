"""The compiler's facade: a small, sorted __all__ whose names all exist."""

from __future__ import annotations

import maas.compiler


def test_all_is_sorted_and_importable() -> None:
    names = maas.compiler.__all__
    # isort-style order, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[:1].isupper(), n))
    for name in names:
        assert hasattr(maas.compiler, name), name
