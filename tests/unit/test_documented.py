"""Every public name is documented (ruff's D rules do not look into private modules)."""

from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = ["coordinator", "listeners", "listeners.orders", "compensations"]


def _undocumented(package: str) -> list[str]:
    module = importlib.import_module(package)
    missing = []
    for name in module.__all__:
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not (obj.__doc__ or "").strip():
            missing.append(name)
        if not inspect.isclass(obj):
            continue
        for attr, member in vars(obj).items():
            if attr.startswith("_") or not (
                inspect.isfunction(member)
                or isinstance(member, property | classmethod | staticmethod)
            ):
                continue
            if not (inspect.getdoc(member) or "").strip():
                missing.append(f"{name}.{attr}")
    return missing


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_has_a_docstring(package: str) -> None:
    assert _undocumented(package) == []
