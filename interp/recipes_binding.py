"""Recipes of the binding models trained on layouts where copying forward by content is not enough
(issue 19, part 4; `experiments.binding` holds the attempts that led here).

``binding-ef-4l`` is attempt ``ef-all`` of `experiments.binding`, shipped with checkpoints: the
issue's entity-first layout (``<bos> ann likes tea . bob likes jam . who likes jam`` -> ``bob``),
a curriculum over the number of pairs (2 first), 32 plain induction rows beside the 64 binding rows
of each batch, and 8 heads of 8 dimensions (binding-4l's shape otherwise).
"""

from __future__ import annotations

from pathlib import Path

import torch

from interp.models import HookedModel, build_native
from interp.tasks import binding, induction
from interp.tokenizers import word_tokenizer
from interp.train import TrainConfig, train

#: binding-4l's shape (`interp.recipes.BINDING_CONFIG`) with 8 heads of 8 dimensions and room for 64 tokens.
BINDING_EF_CONFIG = dict(
    n_layers=4, d_model=64, n_heads=8, d_head=8, d_mlp=256, n_ctx=64, attn_only=False,
    normalization_type="LN", positional_embedding_type="standard", act_fn="gelu",
)
BINDING_EF_LAYOUT = "entity-first"
BINDING_EF_QUERIES = 3
BINDING_EF_ROWS, BINDING_EF_INDUCTION_ROWS = 64, 32
#: ``(until_fraction, sizes)``: 2 pairs for the first 30% of the steps, then 2-3, 2-4, and 2-5 from 70% on.
BINDING_EF_CURRICULUM = ((0.3, (2,)), (0.5, (2, 3)), (0.7, (2, 3, 4)))


def binding_ef_batch(gen: torch.Generator, step: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch of ``binding-ef-4l`` at ``step`` of ``steps``: 64 entity-first contexts of the
    curriculum's sizes with 3 answered queries each (loss on the answers), then 32 induction rows of
    the same width (loss on every token)."""
    sizes = next((s for until, s in BINDING_EF_CURRICULUM if step < until * steps), binding.SIZES)
    tokens, mask = binding.layout_batch(BINDING_EF_ROWS, gen, BINDING_EF_LAYOUT, sizes, BINDING_EF_QUERIES)
    width = tokens.shape[1]
    rows = induction.training_batch(BINDING_EF_INDUCTION_ROWS, width, binding.d_vocab, gen, max_seg=(width - 1) // 2)
    return (torch.cat([tokens, rows]),
            torch.cat([mask, torch.ones(BINDING_EF_INDUCTION_ROWS, width - 1, dtype=torch.bool)]))


def binding_ef_metrics(model, n: int = 500, seed: int = binding.EVAL_SEED) -> dict[str, float]:
    """Held-out accuracy and loss per context size on fresh entity-first prompts (seed ``seed + k``)."""
    return binding.layout_metrics(model, BINDING_EF_LAYOUT, n=n, seed=seed)


def train_binding_ef_4l(out_dir: str | Path, seed: int = 0, steps: int = 3500, progress: bool = True, lr: float = 1e-3) -> HookedModel:
    """4-layer transformer with MLPs (8 heads) binding entities to attributes in the entity-first
    layout, with a curriculum over the number of pairs and induction rows in every batch."""
    from interp.recipes import (  # here, so that interp.recipes can import this module
        _save,
        log_spaced_steps,
    )

    out_dir = Path(out_dir)
    tokenizer = word_tokenizer(binding.vocabulary(), out_dir / "tokenizer")
    model = build_native({**BINDING_EF_CONFIG, "d_vocab": binding.d_vocab}, tokenizer, seed=seed, name="binding-ef-4l")
    config = TrainConfig(steps=steps, batch_size=BINDING_EF_ROWS + BINDING_EF_INDUCTION_ROWS, lr=lr, warmup=100, seed=seed,
                         eval_every=50, weight_decay=0.01)
    result = train(
        model, lambda gen, step: binding_ef_batch(gen, step, steps), config,
        eval_fn=lambda m, step: binding.layout_metrics(m, BINDING_EF_LAYOUT, n=200),
        checkpoint_steps=log_spaced_steps(steps, 11, first=50), checkpoint_dir=out_dir / "checkpoints",
        checkpoint_dtype=torch.float16, progress=progress,
    )
    _save(model, out_dir, task="binding-entity-first", seed=seed, config=config, result=result, metrics=binding_ef_metrics(model))
    return model
