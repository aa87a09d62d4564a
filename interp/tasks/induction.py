"""Induction: sequences whose second half repeats a random first half.

    tokens = repeated_tokens(n=100, half=20, d_vocab=64, seed=0)    # [100, 41]: BOS, r, r
    control = random_tokens(n=100, length=40, d_vocab=64, seed=0)   # [100, 41]: no repeats planted
    induction_metrics(model, tokens)      # loss / accuracy on the first and on the repeated half

Training data (`training_batch`) plants one repeated segment of random length at a random
offset, so that a positional copy head cannot solve it and an induction circuit has to form.
Token 0 is BOS; tokens 1..d_vocab-1 are the random symbols ``t1 .. t{d_vocab-1}``.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from interp.errors import InputError
from interp.tasks.promptset import PromptSet

BOS = 0


def vocabulary(d_vocab: int) -> list[str]:
    """Symbol names for ids 1..d_vocab-1 (id 0 is ``<bos>``)."""
    return [f"t{i}" for i in range(1, d_vocab)]


def _generator(seed: int | torch.Generator) -> torch.Generator:
    return seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))


def _random(n: int, length: int, d_vocab: int, gen: torch.Generator) -> Tensor:
    return torch.randint(1, d_vocab, (n, length), generator=gen)


def _with_bos(x: Tensor) -> Tensor:
    return torch.cat([torch.full((x.shape[0], 1), BOS, dtype=torch.long), x], dim=1)


def repeated_tokens(n: int, half: int, d_vocab: int, seed: int | torch.Generator = 0) -> Int[Tensor, "n pos"]:
    """``[n, 1 + 2*half]``: BOS, a random first half, then the same half again."""
    if half < 2:
        raise InputError(f"half must be at least 2 tokens, got {half}.")
    first = _random(n, half, d_vocab, _generator(seed))
    return _with_bos(torch.cat([first, first], dim=1))


def random_tokens(n: int, length: int, d_vocab: int, seed: int | torch.Generator = 0) -> Int[Tensor, "n pos"]:
    """``[n, 1 + length]``: BOS then uniform random tokens (the non-repeating control)."""
    return _with_bos(_random(n, length, d_vocab, _generator(seed)))


def training_batch(
    batch: int, seq_len: int, d_vocab: int, gen: torch.Generator, min_seg: int = 4, max_seg: int = 23, p_start: float = 0.5
) -> Int[Tensor, "batch seq_len"]:
    """Random tokens (BOS first) with one segment of random length repeated at a random later offset.

    With probability ``p_start`` the segment starts right after BOS: otherwise the model rarely sees
    a match at the start of the context and fails there on the standard ``BOS r r`` evaluation.
    """
    body = _random(batch, seq_len - 1, d_vocab, gen)
    for row in body:
        seg = int(torch.randint(min_seg, max_seg + 1, (1,), generator=gen))
        start = int(torch.randint(0, seq_len - 1 - 2 * seg + 1, (1,), generator=gen))
        if float(torch.rand((), generator=gen)) < p_start:
            start = 0
        copy_at = int(torch.randint(start + seg, seq_len - 1 - seg + 1, (1,), generator=gen))
        row[copy_at : copy_at + seg] = row[start : start + seg].clone()
    return _with_bos(body)


def append_induction_rows(
    tokens: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos_minus_1"], rows: int, d_vocab: int, gen: torch.Generator
) -> tuple[Int[Tensor, "batch_plus_rows pos"], Bool[Tensor, "batch_plus_rows pos_minus_1"]]:
    """A task's training batch with ``rows`` `training_batch` sequences of the same width appended
    (segments of up to half the width; loss on every token of them): the induction rows that the
    binding recipes mix in to form the match-and-copy circuit. ``rows = 0`` returns the batch as is."""
    if rows == 0:
        return tokens, mask
    width = tokens.shape[1]
    extra = training_batch(rows, width, d_vocab, gen, max_seg=(width - 1) // 2)
    return torch.cat([tokens, extra]), torch.cat([mask, torch.ones(rows, width - 1, dtype=torch.bool)])


@torch.no_grad()
def induction_metrics(model, tokens: Int[Tensor, "n pos"], half: int | None = None, batch_size: int = 256) -> dict[str, float]:
    """Loss and top-1 accuracy of next-token prediction on the first and on the repeated half.

    For ``BOS r r``: "first half" scores the predictions of r[1:] from inside the first copy;
    "repeated half" scores the predictions of r[1:] from inside the second copy (the ones an
    induction head can make). Also ``icl_score`` = repeated-half loss minus first-half loss.
    """
    half = (tokens.shape[1] - 1) // 2 if half is None else half
    logits = torch.cat([model(tokens[i : i + batch_size]) for i in range(0, len(tokens), batch_size)])
    logp = logits.log_softmax(-1)[:, :-1]
    target = tokens[:, 1:]
    nll = -logp.gather(-1, target[..., None])[..., 0]
    correct = (logp.argmax(-1) == target).float()
    first = slice(1, half)  # predictions made at positions 1..half-1 (targets r[1:])
    second = slice(half + 1, 2 * half)
    return {
        "loss_first_half": nll[:, first].mean().item(),
        "loss_repeated_half": nll[:, second].mean().item(),
        "acc_first_half": correct[:, first].mean().item(),
        "acc_repeated_half": correct[:, second].mean().item(),
        "icl_score": (nll[:, second].mean() - nll[:, first].mean()).item(),
    }


def induction_prompts(n: int, half: int, d_vocab: int, seed: int = 0) -> PromptSet:
    """Patching prompts: clean ``BOS r r[:-1]``, answer r[-1]; corrupted: the same with the first
    copy of the answer (position ``half``) replaced by another token w, which then becomes what
    induction predicts (the wrong answer). Clean and corrupted differ at that one position."""
    gen = _generator(seed)
    r = _random(n, half, d_vocab, gen)
    clean = _with_bos(torch.cat([r, r[:, :-1]], dim=1))
    shift = torch.randint(1, d_vocab - 1, (n,), generator=gen)
    w = (r[:, -1] - 1 + shift) % (d_vocab - 1) + 1  # uniform over symbols other than r[-1]
    corrupted = clean.clone()
    corrupted[:, half] = w
    return PromptSet(clean, corrupted, r[:, -1], w, metadata={"half": half, "changed_pos": half})
