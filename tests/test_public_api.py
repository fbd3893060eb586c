"""The public surface: one sorted __all__, everything in it importable, nothing private leaks."""

from __future__ import annotations

import importlib
import subprocess
import sys

import ccrotate
import ccrotate.testing


def test_all_is_sorted_and_unique() -> None:
    """__all__ is sorted and has no duplicates, so diffs stay readable."""
    names = ccrotate.__all__
    assert names == sorted(names)
    assert len(names) == len(set(names))


def test_every_exported_name_exists_and_is_public() -> None:
    """Each exported name resolves and comes from a private module of the package."""
    for name in ccrotate.__all__:
        obj = getattr(ccrotate, name)
        module = getattr(obj, "__module__", "ccrotate")
        if name != "__version__":
            assert module.startswith("ccrotate"), (name, module)


def test_exported_classes_and_functions_have_docstrings() -> None:
    """Public classes and functions carry a docstring, as the brief asks."""
    for namespace in (ccrotate, ccrotate.testing):
        for name in namespace.__all__:
            obj = getattr(namespace, name)
            if callable(obj):
                assert (obj.__doc__ or "").strip(), f"{namespace.__name__}.{name} has no docstring"


def test_testing_all_is_sorted() -> None:
    """ccrotate.testing exposes a sorted __all__ too."""
    assert ccrotate.testing.__all__ == sorted(ccrotate.testing.__all__)


def test_version_comes_from_the_package() -> None:
    """__version__ is a PEP 440-ish string."""
    assert ccrotate.__version__.count(".") >= 2


def test_core_import_does_not_load_optional_extras() -> None:
    """`import ccrotate` stays light: no aiohttp, uvicorn, prometheus_client, duckdb."""
    code = ("import sys, ccrotate; heavy = [m for m in ('aiohttp', 'uvicorn', "
            "'prometheus_client', 'duckdb', 'anthropic', 'openai', 'redis') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""


def test_private_modules_import_one_way() -> None:
    """No import cycles: every private module imports on its own in a fresh interpreter."""
    import pkgutil

    names = [m.name for m in pkgutil.iter_modules(ccrotate.__path__) if m.name.startswith("_")]
    for name in names:
        importlib.import_module(f"ccrotate.{name}")
    code = "; ".join(f"import ccrotate.{n}" for n in reversed(names))
    subprocess.run([sys.executable, "-c", code], check=True)
