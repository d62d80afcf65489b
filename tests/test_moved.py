"""Import paths that moved keep working until the next minor release, with a deprecation warning."""

from __future__ import annotations

import importlib
import sys

import pytest

from resbench.moved import MOVED_MODULES, REMOVED_IN


@pytest.mark.parametrize(("old", "new"), sorted(MOVED_MODULES.items()))
def test_an_old_path_warns_and_gives_the_objects_of_the_new_one(old: str, new: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}.*removed in resbench {REMOVED_IN}"):
        forwarder = importlib.import_module(old)
    target = importlib.import_module(new)
    for name in getattr(target, "__all__", ()):
        assert getattr(forwarder, name) is getattr(target, name)


def test_the_documented_plugin_imports_of_the_old_layout_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    for old in ("resbench.formats", "resbench.faults", "resbench.faultspace", "resbench.report.formats"):
        monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning):
        from resbench.faults import FaultModel, FaultSites  # noqa: F401
        from resbench.formats import NumberFormat
        from resbench.report.formats import display_frame  # noqa: F401
    from resbench.engine.formats import NumberFormat as moved_format

    assert NumberFormat is moved_format


def test_an_unknown_name_under_an_old_path_is_an_attribute_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "resbench.score", raising=False)
    with pytest.warns(DeprecationWarning), pytest.raises(ImportError):
        from resbench.score import no_such_name  # type: ignore[attr-defined]  # noqa: F401
