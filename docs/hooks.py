"""MkDocs hooks: the site's pages come from the repository's own files, and a public name without a
docstring fails the build.

The README, the circuit cards, ``benchmarks/RESULTS.md``, ``assets/REPORT.md``, its figures and the
notebooks are added to the site at their repository paths (nothing is copied into ``docs/``), so
the relative links between them resolve as they do on GitHub. Every name in the ``__all__`` of
``interp``, ``patching`` and ``probes`` must have a docstring: a missing one is logged as a warning,
which ``strict: true`` turns into a failed build.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("interp", "patching", "probes")
# repository files that become pages (or page assets), by glob, at their own paths
SOURCES = (
    "README.md",
    "interp/circuits/*.md",
    "benchmarks/RESULTS.md",
    "assets/REPORT.md",
    "assets/figures/*.png",
    "notebooks/*.ipynb",
)
log = logging.getLogger("mkdocs.hooks.interp")


class _KnownDynamicAll(logging.Filter):
    """``interp.figures.__all__`` names its figures through ``*FIGURES``, a registry filled at import
    time, which griffe cannot read statically; the figures are documented on their own modules.
    This one message is dropped; every other griffe warning still fails the strict build."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Unsupported item in interp.figures.__all__: FIGURES" not in record.getMessage()


for _name in ("griffe", "mkdocs.plugins.griffe"):
    logging.getLogger(_name).addFilter(_KnownDynamicAll())


@event_priority(100)  # before mkdocs-jupyter, which turns the notebooks among these into pages
def on_files(files: Files, config) -> Files:
    for pattern in SOURCES:
        paths = sorted(ROOT.glob(pattern))
        if not paths:
            log.warning("docs/hooks.py: no file matches %r", pattern)
        for path in paths:
            files.append(File(path.relative_to(ROOT).as_posix(), src_dir=str(ROOT), dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))
    return files


def _exported(package: str, search_paths: list[str]):
    """``(name, object)`` for each name in ``package.__all__``, read statically with griffe (torch is
    never imported). A function re-exported under the name of its own submodule
    (``from probes.collect import collect``) is found inside that submodule."""
    import griffe

    module = griffe.load(package, search_paths=search_paths, resolve_aliases=True, resolve_external=False)
    for name in module.exports or []:
        name = name if isinstance(name, str) else name.name
        obj = module.members.get(name)
        if obj is not None and obj.is_module and name in obj.members and not obj.members[name].is_module:
            obj = obj.members[name]
        yield name, obj


def undocumented(packages: tuple[str, ...] = PACKAGES, search_paths: list[str] | None = None) -> list[str]:
    """``package.name`` for every exported name (``__all__``) whose object has no docstring."""
    missing = []
    for package in packages:
        for name, obj in _exported(package, search_paths or [str(ROOT)]):
            try:
                doc = obj.docstring if obj is not None else None
            except Exception:  # an alias griffe cannot resolve
                doc = None
            if doc is None or not doc.value.strip():
                missing.append(f"{package}.{name}")
    return missing


def unlisted(site_dir: str | Path, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """``package.name`` for every exported name with no entry (heading anchor) on its package's
    reference page: neither ``package.name`` nor the object's own path (``probes.collect.collect``)."""
    import re

    missing = []
    for package in packages:
        page = Path(site_dir) / "reference" / f"{package}.html"
        ids = set(re.findall(r'id="([^"]+)"', page.read_text())) if page.exists() else set()
        for name, obj in _exported(package, [str(ROOT)]):
            if f"{package}.{name}" not in ids and (obj is None or obj.path not in ids):
                missing.append(f"{package}.{name}")
    return missing


def on_pre_build(config) -> None:
    for name in undocumented():
        log.warning("public name without a docstring: %s", name)


def on_post_build(config) -> None:
    for name in unlisted(config["site_dir"]):
        log.warning("public name missing from the API reference: %s (add it to docs/reference/)", name)
