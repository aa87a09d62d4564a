"""Training loop for our small models: AdamW, warm-up then cosine decay, gradient clipping,
a tqdm bar showing the loss, eval callbacks, and checkpoints at chosen steps. Seeded: the same
call gives the same weights on the same machine.

    result = train(model, batch_fn, TrainConfig(steps=3000, batch_size=64, seed=0),
                   eval_fn=lambda m, step: induction_metrics(m, eval_tokens),
                   checkpoint_steps=[0, 100, 1000], checkpoint_dir="ckpts/")
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Int
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import InputError
from interp.models import HookedModel, state_dict_of

#: batch_fn(generator, step) -> tokens [batch pos], or (tokens, loss_mask [batch pos-1]) where the
#: mask marks which next-token predictions count in the loss.
BatchFn = Callable[[torch.Generator, int], Tensor | tuple[Tensor, Tensor]]
EvalFn = Callable[[HookedModel, int], dict[str, float]]


@dataclass
class TrainConfig:
    """Optimisation settings; every field is validated by `train`."""

    steps: int
    batch_size: int
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    seed: int = 0
    eval_every: int = 250

    def validate(self) -> None:
        for name in ("steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise InputError(f"TrainConfig.{name} must be at least 1, got {getattr(self, name)}.")
        if not self.lr > 0:
            raise InputError(f"TrainConfig.lr must be positive, got {self.lr}.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise InputError(f"TrainConfig.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}.")


@dataclass
class TrainResult:
    """History of evaluations (one dict per eval step), the loss curve, and the wall time."""

    history: list[dict] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    time_s: float = 0.0
    checkpoints: list[int] = field(default_factory=list)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr_ratio * lr`` at the last step."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def next_token_loss(logits: Tensor, tokens: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos_minus_1"] | None = None) -> Tensor:
    """Mean cross-entropy of predicting tokens[:, 1:] from logits[:, :-1] (only where ``mask``)."""
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    if mask is None:
        return nll.mean()
    mask = mask.flatten().to(nll.dtype)
    return (nll * mask).sum() / mask.sum().clamp_min(1)


def train(
    model: HookedModel,
    batch_fn: BatchFn,
    config: TrainConfig,
    eval_fn: EvalFn | None = None,
    checkpoint_steps: Iterable[int] = (),
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    checkpoint_dtype: torch.dtype | None = None,
) -> TrainResult:
    """Train ``model`` in place; return its history. Checkpoint ``step_NNNNNN.safetensors`` files
    hold the weights *before* that optimiser step (step 0 = initialisation; ``steps`` = final).
    ``checkpoint_dtype`` (e.g. ``torch.float16``) stores the checkpoints' floating tensors in a smaller
    type; `interp.models.load_weights` casts them back to the model's dtype on loading."""
    config.validate()
    checkpoint_steps = sorted(set(checkpoint_steps))
    if checkpoint_steps and checkpoint_dir is None:
        raise InputError("checkpoint_steps were given but no checkpoint_dir to write them to.")
    if any(s < 0 or s > config.steps for s in checkpoint_steps):
        raise InputError(f"Checkpoint steps must lie in [0, {config.steps}], got {checkpoint_steps}.")
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)

    torch.manual_seed(config.seed)
    data_gen = torch.Generator().manual_seed(config.seed + 1)
    module = model.module
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    result = TrainResult()
    eval_steps = set(range(0, config.steps + 1, config.eval_every)) | {config.steps} | set(checkpoint_steps)
    start = time.perf_counter()

    def evaluate(step: int) -> None:
        if step in checkpoint_steps:
            state = state_dict_of(model)
            if checkpoint_dtype is not None:
                state = {k: v.to(checkpoint_dtype) if v.is_floating_point() else v for k, v in state.items()}
            save_file(state, str(Path(checkpoint_dir) / f"step_{step:06d}.safetensors"))
            result.checkpoints.append(step)
        if eval_fn is not None and step in eval_steps:
            module.eval()
            metrics = eval_fn(model, step)
            result.history.append({"step": step, **metrics})
            module.train()

    bar = tqdm(range(config.steps), desc="train", disable=not progress, dynamic_ncols=True)
    module.train()
    for step in bar:
        evaluate(step)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, config)
        batch = batch_fn(data_gen, step)
        tokens, mask = batch if isinstance(batch, tuple) else (batch, None)
        loss = next_token_loss(module(tokens), tokens, mask)
        if not torch.isfinite(loss):
            raise InputError(f"The training loss became {loss.item()} at step {step}; lower the learning rate.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        result.losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    module.eval()
    evaluate(config.steps)
    result.time_s = time.perf_counter() - start
    return result
