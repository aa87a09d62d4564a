"""Read and write SAEs in SAELens's on-disk format (a directory with ``cfg.json`` and
``sae_weights.safetensors``), so SAEs move between this toolkit and SAELens-based tools.

    save_saelens(sae, "saes/l1_topk", model_name="induction-2l")
    sae = load_saelens("saes/l1_topk")          # also directories SAELens itself saved

The format (SAELens 6; checked against its source at v6.18): ``sae_weights.safetensors`` holds
``W_enc [d_in d_sae]``, ``W_dec [d_sae d_in]``, ``b_enc [d_sae]``, ``b_dec [d_in]`` and, for
JumpReLU, ``threshold [d_sae]``. ``cfg.json`` holds ``architecture`` ("standard", "topk",
"jumprelu"), ``d_in``, ``d_sae``, ``dtype``, ``device``, ``apply_b_dec_to_input``,
``normalize_activations``, ``reshape_activations``, ``metadata`` (``hook_name``, ``model_name``,
``sae_lens_version``, ...) and, for topk, ``k`` and ``rescale_acts_by_decoder_norm``.
Architectures map as: our "relu" is SAELens's "standard"; "topk" and "jumprelu" keep their
names; a "batchtopk" SAE is saved as "jumprelu" with its global inference threshold in every
latent (what SAELens itself saves for BatchTopK), so it loads back as kind "jumprelu" and encodes
the same. SAEs trained with ``normalize=True`` already read raw activations (the scale is folded
in when training ends), so ``normalize_activations`` is always written as "none". Reading also
accepts pre-6.0 configs (``hook_point``, ``activation_fn_str``) and folds
``rescale_acts_by_decoder_norm`` into the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from interp.errors import InputError, LoadError
from probes.sae.model import SAE

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
#: the SAELens format version written into ``metadata.sae_lens_version`` (6.x configs).
FORMAT_VERSION = "6.0.0"
_TO_SAELENS = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}
_FROM_SAELENS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}


def save_saelens(sae: SAE, path: str | Path, hook_name: str | None = None, model_name: str | None = None,
                 overwrite: bool = False) -> Path:
    """Write ``sae`` to directory ``path`` as SAELens does (``cfg.json`` + ``sae_weights.safetensors``).

    ``hook_name`` / ``model_name`` go into ``metadata`` (defaults: what ``sae.metadata`` records).
    An existing SAE directory is replaced only with ``overwrite=True``. Returns the directory.
    """
    if not isinstance(sae, SAE):
        raise InputError(f"save_saelens needs an SAE, got {type(sae).__name__}.")
    path = Path(path)
    if (path / CFG_FILE).exists() and not overwrite:
        raise InputError(f"{path} already holds an SAE ({CFG_FILE}); pass overwrite=True to replace it, or choose another directory.")
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} is a file; save_saelens writes a directory.")
    hook_name = hook_name or sae.metadata.get("hook_name")
    model_name = model_name or sae.metadata.get("model_name")
    weights = {name: getattr(sae, name).detach().cpu().contiguous() for name in ("W_enc", "W_dec", "b_enc", "b_dec")}
    if sae.kind in ("jumprelu", "batchtopk"):
        weights["threshold"] = sae.threshold.detach().cpu().contiguous()
    metadata: dict[str, Any] = {"sae_lens_version": FORMAT_VERSION, "sae_lens_training_version": FORMAT_VERSION,
                                "saved_by": "interp-toolkit probes.sae.save_saelens", "trained_kind": sae.kind}
    if hook_name is not None:
        metadata["hook_name"] = str(hook_name)
    if model_name is not None:
        metadata["model_name"] = str(model_name)
    for key in ("hook_head_index", "prepend_bos", "context_size", "dataset_path", "input_scale", "seed", "steps"):
        if key in sae.metadata:
            metadata[key] = sae.metadata[key]
    z_site = hook_name is not None and str(hook_name).endswith("hook_z") and "[head=" not in str(hook_name)
    cfg: dict[str, Any] = {
        "architecture": _TO_SAELENS[sae.kind], "d_in": sae.d_in, "d_sae": sae.d_sae,
        "dtype": str(sae.dtype).removeprefix("torch."), "device": "cpu",
        "apply_b_dec_to_input": sae.apply_b_dec_to_input, "normalize_activations": "none",
        "reshape_activations": "hook_z" if z_site else "none", "metadata": metadata,
    }
    if sae.kind == "topk":
        cfg.update(k=sae.k, rescale_acts_by_decoder_norm=False)
    path.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(path / WEIGHTS_FILE))
    (path / CFG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
    return path


def load_saelens(path: str | Path, device: str | torch.device | None = None) -> SAE:
    """Read an SAE from a SAELens directory (``cfg.json`` + ``sae_weights.safetensors``).

    Architectures "standard" (-> kind "relu"), "topk" and "jumprelu" are read; others (gated,
    transcoders, ...) raise a LoadError naming them. The SAE keeps the stored dtype.
    """
    path = Path(path)
    if not (path / CFG_FILE).exists() or not (path / WEIGHTS_FILE).exists():
        raise LoadError(f"{path} is not a SAELens SAE directory: it needs {CFG_FILE} and {WEIGHTS_FILE}. Save one with "
                        f"probes.sae.save_saelens(sae, {str(path)!r}).")
    cfg = _normalise_cfg(json.loads((path / CFG_FILE).read_text()))
    architecture = cfg.get("architecture")
    if architecture not in _FROM_SAELENS:
        raise LoadError(f"{path}: SAELens architecture {architecture!r} is not supported here; readable ones are "
                        f"{', '.join(_FROM_SAELENS)}.")
    norm = cfg.get("normalize_activations", "none") or "none"
    if norm != "none":
        raise LoadError(f"{path}: normalize_activations={norm!r} means the SAE expects rescaled inputs that this loader "
                        f"does not reproduce; fold the scale into the weights in SAELens (e.g. "
                        f"fold_activation_norm_scaling_factor) and save again.")
    weights = load_file(str(path / WEIGHTS_FILE))
    missing = [n for n in ("W_enc", "W_dec", "b_enc", "b_dec") if n not in weights]
    if architecture == "jumprelu" and "threshold" not in weights:
        missing.append("threshold")
    if missing:
        raise LoadError(f"{path}/{WEIGHTS_FILE} lacks {', '.join(missing)}; it holds {', '.join(sorted(weights))}.")
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    if tuple(weights["W_enc"].shape) != (d_in, d_sae) or tuple(weights["W_dec"].shape) != (d_sae, d_in):
        raise LoadError(f"{path}: W_enc {tuple(weights['W_enc'].shape)} / W_dec {tuple(weights['W_dec'].shape)} do not "
                        f"match d_in={d_in}, d_sae={d_sae} of {CFG_FILE}.")
    kind = _FROM_SAELENS[architecture]
    dtype = weights["W_dec"].dtype
    metadata = dict(cfg.get("metadata") or {})
    metadata["loaded_from"] = str(path)
    sae = SAE(d_in, d_sae, kind, k=int(cfg["k"]) if kind == "topk" else None,
              apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)), metadata=metadata, dtype=dtype)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec", *(["threshold"] if kind == "jumprelu" else [])):
            getattr(sae, name).copy_(weights[name])
        if kind == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
            # SAELens scales pre-activations by ||W_dec[i]|| and divides them out before decoding:
            # the same map with W_enc, b_enc scaled by the norms and W_dec's rows unit length.
            norms = sae.W_dec.norm(dim=-1)
            sae.W_enc.mul_(norms)
            sae.b_enc.mul_(norms)
            sae.W_dec.div_(norms[:, None])
    sae.requires_grad_(False)
    return sae if device is None else sae.to(device)


def _normalise_cfg(cfg: dict) -> dict:
    """A pre-6.0 SAELens config in the 6.x layout (renamed keys, architecture from the activation)."""
    cfg = dict(cfg)
    if "metadata" not in cfg:
        metadata = {}
        for old, new in (("hook_point", "hook_name"), ("hook_name", "hook_name"), ("model_name", "model_name"),
                         ("hook_point_head_index", "hook_head_index"), ("hook_head_index", "hook_head_index")):
            if old in cfg:
                metadata[new] = cfg[old]
        cfg["metadata"] = metadata
    if "architecture" not in cfg or (cfg.get("architecture") == "standard" and cfg.get("activation_fn_str") == "topk"):
        act = cfg.get("activation_fn_str", cfg.get("activation_fn", "relu"))
        cfg["architecture"] = "topk" if act == "topk" else cfg.get("architecture", "standard")
    if cfg["architecture"] == "topk" and "k" not in cfg:
        kwargs = cfg.get("activation_fn_kwargs") or {}
        if "k" not in kwargs:
            raise LoadError("A topk SAELens config without k (neither 'k' nor activation_fn_kwargs.k); add it to cfg.json.")
        cfg["k"] = kwargs["k"]
    return cfg
