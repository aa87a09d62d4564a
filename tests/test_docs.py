"""The documentation site: `mkdocs build --strict` succeeds offline; every name that `interp`,
`patching` and `probes` export has a docstring and an entry in the API reference; the README is the
front page; the circuit cards, the benchmark results and the notebooks (rendered, not executed) are
pages; and the build's own check catches an exported name without a docstring."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("docs")  # one worker builds once for the module

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("interp", "patching", "probes")


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built once (about 10 s), strict, into a temporary directory."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _anchors(page: Path) -> set[str]:
    return set(re.findall(r'id="([^"]+)"', page.read_text()))


def test_every_exported_name_has_a_docstring_and_a_reference_entry(site):
    no_doc, not_listed = [], []
    for package in PACKAGES:
        module = importlib.import_module(package)
        ids = _anchors(site / "reference" / f"{package}.html")
        assert len(module.__all__) >= 10
        for name in module.__all__:
            obj = getattr(module, name)
            assert inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj), f"{package}.{name}"
            if not (obj.__doc__ or "").strip():  # its own: classes and functions do not inherit one
                no_doc.append(f"{package}.{name}")
            own = obj.__name__ if inspect.ismodule(obj) else f"{obj.__module__}.{obj.__qualname__}"
            if f"{package}.{name}" not in ids and own not in ids:
                not_listed.append(f"{package}.{name}")
    assert no_doc == [], f"exported without a docstring: {no_doc}"
    assert not_listed == [], f"exported but not in the API reference: {not_listed}"


def test_pages_come_from_the_repository(site):
    index = (site / "index.html").read_text()
    assert "Install into your own environment" in index and "make reproduce" in index
    assert 'href="interp/circuits/induction.html"' in index and 'href="benchmarks/RESULTS.html"' in index
    assert (site / "assets" / "figures" / "induction_phase_change.png").stat().st_size > 5000
    for card in ("induction", "facts", "binding"):
        page = (site / "interp" / "circuits" / f"{card}.html").read_text()
        assert "../../assets/figures/" in page  # the card's figures, at the paths its links name
    assert "Benchmark results" in (site / "benchmarks" / "RESULTS.html").read_text()
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 8
    for name in notebooks:
        page = (site / "notebooks" / f"{name}.html").read_text()
        assert "jp-OutputArea" in page, name  # rendered with its stored outputs
    reference = (site / "reference" / "index.html").read_text()
    assert "mkdocstrings" in reference and "Sphinx" in reference  # the choice, explained


def test_the_build_check_catches_a_missing_docstring(tmp_path):
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        '"""A package."""\n\nfrom fakepkg.collect import collect\n\n__all__ = ["documented", "bare", "collect", "Bare"]\n\n\n'
        'def documented():\n    """Has one."""\n\n\ndef bare():\n    pass\n\n\nclass Bare:\n    pass\n')
    (pkg / "collect.py").write_text('"""The module has a docstring; the function does not."""\n\n\ndef collect():\n    pass\n')
    hooks = _hooks()
    assert hooks.undocumented(("fakepkg",), [str(tmp_path)]) == ["fakepkg.bare", "fakepkg.collect", "fakepkg.Bare"]
    assert hooks.undocumented() == []
    config = (ROOT / "mkdocs.yml").read_text()
    assert "strict: true" in config and "docs/hooks.py" in config
