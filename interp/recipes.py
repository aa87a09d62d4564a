"""How each shipped model is trained: ``interp train NAME [--seed S]`` calls ``RECIPES[NAME]``.

Each recipe builds a fresh native model, trains it with `interp.train.train`, measures it on
freshly generated data, and saves it (weights, config, tokenizer, checkpoints, history) to a
directory, by default ``assets/models/NAME``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from interp.models import HookedModel, build_native, save_native
from interp.tasks import binding, bio, facts, induction
from interp.tokenizers import word_tokenizer
from interp.train import TrainConfig, train


def log_spaced_steps(steps: int, n: int, first: int = 25) -> list[int]:
    """``n`` roughly log-spaced steps from ``first`` to ``steps``, plus step 0."""
    points = np.unique(np.round(np.geomspace(first, steps, n)).astype(int))
    return [0, *points.tolist()]


INDUCTION_CONFIG = dict(
    n_layers=2, d_model=64, n_heads=4, d_head=16, d_vocab=64, n_ctx=64, attn_only=True,
    normalization_type="LN", positional_embedding_type="standard", act_fn="gelu",
)
INDUCTION_EVAL = dict(n=500, half=23, seed=10_000)  # fresh sequences, never seen in training


def train_induction_2l(out_dir: str | Path, seed: int = 0, steps: int = 6000, progress: bool = True, lr: float = 1e-3) -> HookedModel:
    """2-layer attention-only model on random tokens with one planted repeated segment."""
    d_vocab, seq_len = INDUCTION_CONFIG["d_vocab"], 48
    out_dir = Path(out_dir)
    tokenizer = word_tokenizer(induction.vocabulary(d_vocab), out_dir / "tokenizer")
    model = build_native(INDUCTION_CONFIG, tokenizer, seed=seed, name="induction-2l")
    probe = induction.repeated_tokens(200, 23, d_vocab, seed=seed + 5_000)
    config = TrainConfig(steps=steps, batch_size=64, lr=lr, warmup=100, seed=seed, eval_every=100)
    result = train(
        model,
        lambda gen, step: induction.training_batch(config.batch_size, seq_len, d_vocab, gen),
        config,
        eval_fn=lambda m, step: induction.induction_metrics(m, probe),
        checkpoint_steps=log_spaced_steps(steps, 14, first=50),
        checkpoint_dir=out_dir / "checkpoints",
        progress=progress,
    )
    ev = induction.repeated_tokens(INDUCTION_EVAL["n"], INDUCTION_EVAL["half"], d_vocab, seed=INDUCTION_EVAL["seed"])
    metrics = induction.induction_metrics(model, ev)
    _save(model, out_dir, task="induction", seed=seed, config=config, result=result, metrics=metrics)
    return model


FACTS_CONFIG = dict(
    n_layers=4, d_model=128, n_heads=4, d_head=32, d_mlp=512, n_ctx=16, attn_only=False,
    normalization_type="LN", positional_embedding_type="standard", act_fn="gelu",
)


def train_facts_4l(out_dir: str | Path, seed: int = 0, steps: int = 3000, progress: bool = True, lr: float = 1e-3) -> HookedModel:
    """4-layer transformer with MLPs memorising a synthetic knowledge base (loss on the answer only)."""
    kb = facts.KnowledgeBase.build(seed=0)  # the knowledge base is fixed; the seed varies the model
    out_dir = Path(out_dir)
    tokenizer = word_tokenizer(kb.vocab, out_dir / "tokenizer")
    model = build_native({**FACTS_CONFIG, "d_vocab": kb.d_vocab}, tokenizer, seed=seed, name="facts-4l")
    config = TrainConfig(steps=steps, batch_size=128, lr=lr, warmup=100, seed=seed, eval_every=50, weight_decay=0.01)
    result = train(
        model, lambda gen, step: kb.training_batch(config.batch_size, gen), config,
        eval_fn=lambda m, step: facts.recall_metrics(m, kb),
        checkpoint_steps=log_spaced_steps(steps, 11, first=50), checkpoint_dir=out_dir / "checkpoints",
        checkpoint_dtype=torch.float16, progress=progress,
    )
    _save(model, out_dir, task="facts", seed=seed, config=config, result=result, metrics=facts.recall_metrics(model, kb))
    return model


BINDING_CONFIG = dict(
    n_layers=4, d_model=64, n_heads=4, d_head=16, d_mlp=256, n_ctx=48, attn_only=False,
    normalization_type="LN", positional_embedding_type="standard", act_fn="gelu",
)
BINDING_QUERIES = 5  # queries per training context, capped at its pairs (the first one is the evaluated task)
BINDING_INDUCTION_ROWS = 64  # of the 128 rows of each batch: plain induction sequences over the same tokens


def binding_batch(gen: torch.Generator, batch: int = 128, induction_rows: int = BINDING_INDUCTION_ROWS):
    """A training batch of ``binding-4l``: binding contexts with several queries (loss on the answers)
    and ``induction_rows`` random-token sequences with one repeated segment (loss on every token),
    drawn from the binding vocabulary. The induction rows form the match-and-copy circuit that the
    attribute-first binding task needs, which ends the ``1/k`` plateau for every seed tried."""
    tokens, mask = binding.training_batch(batch - induction_rows, gen, queries=BINDING_QUERIES)
    return induction.append_induction_rows(tokens, mask, induction_rows, binding.d_vocab, gen)


def train_binding_4l(out_dir: str | Path, seed: int = 0, steps: int = 3000, progress: bool = True, lr: float = 1e-3) -> HookedModel:
    """4-layer transformer with MLPs binding entities to attributes in context (2-5 pairs, fresh
    random names and attributes in every prompt), with induction sequences mixed into every batch."""
    out_dir = Path(out_dir)
    tokenizer = word_tokenizer(binding.vocabulary(), out_dir / "tokenizer")
    model = build_native({**BINDING_CONFIG, "d_vocab": binding.d_vocab}, tokenizer, seed=seed, name="binding-4l")
    config = TrainConfig(steps=steps, batch_size=128, lr=lr, warmup=100, seed=seed, eval_every=50, weight_decay=0.01)
    result = train(
        model, lambda gen, step: binding_batch(gen, config.batch_size), config,
        eval_fn=lambda m, step: binding.binding_metrics(m, n=200, seed=binding.EVAL_SEED + 100),
        checkpoint_steps=log_spaced_steps(steps, 11, first=50), checkpoint_dir=out_dir / "checkpoints",
        checkpoint_dtype=torch.float16, progress=progress,
    )
    _save(model, out_dir, task="binding", seed=seed, config=config, result=result, metrics=binding.binding_metrics(model))
    return model


#: The biography world of ``facts-bio`` (the ``profile-qa-n1000`` run of ``experiments.bio``): 1,000
#: individuals, 4 relations, shuffled biographies with 3 paraphrases per relation, a profile sentence
#: (the name followed by every attribute), question rows for half of the individuals.
FACTS_BIO_TASK = dict(n_individuals=1000, relations=("birth_city", "birth_year", "university", "employer"),
                      profile=True, question_share=0.5, seed=0)
FACTS_BIO_EVAL = 256  # individuals evaluated every 50 steps (half from the question set)


def train_facts_bio(out_dir: str | Path, seed: int = 0, steps: int = 2500, progress: bool = True, lr: float = 1e-3) -> HookedModel:
    """``facts-bio``: `FACTS_CONFIG`'s 4-layer shape trained with a language-model loss on every token
    of the biographies of `FACTS_BIO_TASK` (the world is fixed; the seed varies the model and the data order)."""
    world = bio.Biographies(bio.BioConfig(**FACTS_BIO_TASK))
    out_dir = Path(out_dir)
    tokenizer = word_tokenizer(world.vocab, out_dir / "tokenizer")
    model = build_native({**FACTS_CONFIG, "d_vocab": world.d_vocab, "n_ctx": world.max_len}, tokenizer, seed=seed, name="facts-bio")
    config = TrainConfig(steps=steps, batch_size=64, lr=lr, warmup=100, seed=seed, eval_every=50, weight_decay=0.01)
    subset = world.eval_individuals(FACTS_BIO_EVAL, seed=0)
    result = train(
        model, lambda gen, step: world.training_batch(config.batch_size, gen), config,
        eval_fn=lambda m, step: world.recall_metrics(m, subset),
        checkpoint_steps=log_spaced_steps(steps, 11, first=50), checkpoint_dir=out_dir / "checkpoints",
        checkpoint_dtype=torch.float16, progress=progress,
    )
    _save(model, out_dir, task="facts-bio", seed=seed, config=config, result=result, metrics=world.recall_metrics(model),
          extra={"bio": world.config.to_dict()})
    return model


# ---------------------------------------------------------------------------- binding-ef-4l
# Attempt ``ef-all`` of `experiments.binding` (issue 19, part 4), shipped with checkpoints: the
# entity-first layout (``<bos> ann likes tea . bob likes jam . who likes jam`` -> ``bob``), where
# copying forward by content is not enough, with a curriculum over the number of pairs (2 first),
# 32 plain induction rows beside the 64 binding rows of each batch, and 8 heads of 8 dimensions.

#: binding-4l's shape (`BINDING_CONFIG`) with 8 heads of 8 dimensions and room for 64 tokens.
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
    return induction.append_induction_rows(tokens, mask, BINDING_EF_INDUCTION_ROWS, binding.d_vocab, gen)


def binding_ef_metrics(model, n: int = 500, seed: int = binding.EVAL_SEED) -> dict[str, float]:
    """Held-out accuracy and loss per context size on fresh entity-first prompts (seed ``seed + k``)."""
    return binding.layout_metrics(model, BINDING_EF_LAYOUT, n=n, seed=seed)


def train_binding_ef_4l(out_dir: str | Path, seed: int = 0, steps: int = 3500, progress: bool = True, lr: float = 1e-3) -> HookedModel:
    """4-layer transformer with MLPs (8 heads) binding entities to attributes in the entity-first
    layout, with a curriculum over the number of pairs and induction rows in every batch."""
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


def _save(model: HookedModel, out_dir: Path, task: str, seed: int, config: TrainConfig, result, metrics: dict,
          extra: dict | None = None) -> None:
    n_params = sum(p.numel() for p in model.module.parameters())
    save_native(model, out_dir, extra={
        **(extra or {}),
        "task": task,
        "n_params": n_params,
        "metrics": metrics,
        "eval": INDUCTION_EVAL if task == "induction" else None,
        "training": {
            "command": f"interp train {model.name} --seed {seed}",
            "seed": seed,
            "time_s": round(result.time_s, 1),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "config": vars(config),
        },
    })
    result.save(out_dir / "history.json")


RECIPES: dict[str, Callable[..., HookedModel]] = {
    "induction-2l": train_induction_2l, "facts-4l": train_facts_4l, "binding-4l": train_binding_4l,
    "facts-bio": train_facts_bio, "binding-ef-4l": train_binding_ef_4l,
}
