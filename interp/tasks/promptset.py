"""PromptSet: clean and corrupted tokens of the same shape, answer and wrong-answer ids, metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from interp.errors import InputError


@dataclass
class PromptSet:
    """Clean / corrupted prompt pairs for patching and probing.

        prompts = PromptSet(clean, corrupted, answers, wrong)
        prompts.clean        # [batch pos] token ids
        prompts.corrupted    # [batch pos], same shape (checked)
        prompts.answers      # [batch] id of the correct next token at ``answer_pos``
        prompts.wrong        # [batch] id of the answer under the corrupted prompt (for logit diff)

    ``answer_pos`` is the position whose next-token logits the metrics read (default: the last).
    ``metadata`` holds task-specific per-prompt information (subject positions, labels, ...).
    """

    clean: Int[Tensor, "batch pos"]
    corrupted: Int[Tensor, "batch pos"]
    answers: Int[Tensor, " batch"]
    wrong: Int[Tensor, " batch"] | None = None
    answer_pos: int = -1
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("clean", "corrupted"):
            t = getattr(self, name)
            if not isinstance(t, Tensor) or t.ndim != 2 or t.is_floating_point():
                raise InputError(f"PromptSet.{name} must be integer token ids [batch pos], got {_describe(t)}.")
        if self.clean.shape != self.corrupted.shape:
            raise InputError(
                f"Clean tokens {tuple(self.clean.shape)} and corrupted tokens {tuple(self.corrupted.shape)} "
                f"differ in shape. Patching pairs positions one to one, so align them: pad both to the "
                f"same length (keep the answer position aligned) or choose corruptions with the same "
                f"number of tokens as the clean prompt."
            )
        self.answers = self._per_prompt(self.answers, "answers")
        if self.wrong is not None:
            self.wrong = self._per_prompt(self.wrong, "wrong")
        seq = self.clean.shape[1]
        if not -seq <= self.answer_pos < seq:
            raise InputError(f"answer_pos {self.answer_pos} is outside prompts of {seq} tokens.")

    def _per_prompt(self, values, name: str) -> Int[Tensor, " batch"]:
        """``values`` as one token id per prompt ``[batch]`` (or several, ``[batch k]``), checked."""
        n = self.clean.shape[0]
        what = "answers" if name == "answers" else "wrong answers"
        try:
            t = torch.as_tensor(values, device=self.clean.device)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InputError(f"PromptSet.{name} could not be read as token ids ({e}); give {n} ints, one per prompt.") from None
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise InputError(f"PromptSet.{name} must be integer token ids, got dtype {t.dtype}; convert with .long().")
        if t.ndim == 0 or t.shape[0] != n or t.ndim > 2:
            raise InputError(f"Expected {n} {what} (one per prompt, shape [{n}]), got {what} of shape {tuple(t.shape)}; "
                             f"give PromptSet.{name} one token id for each of the {n} prompts.")
        return t.long().reshape(n, -1).squeeze(-1)

    def __len__(self) -> int:
        return self.clean.shape[0]

    @property
    def seq_len(self) -> int:
        return self.clean.shape[1]

    def __getitem__(self, index) -> PromptSet:
        """A subset of prompts (an int, slice, list or mask), metadata tensors sliced alike."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        meta = {k: v[index] if isinstance(v, Tensor) and v.shape[:1] == (len(self),) else v for k, v in self.metadata.items()}
        return PromptSet(
            self.clean[index], self.corrupted[index], self.answers[index],
            None if self.wrong is None else self.wrong[index], self.answer_pos, meta,
        )

    def to(self, device) -> PromptSet:
        meta = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in self.metadata.items()}
        return PromptSet(
            self.clean.to(device), self.corrupted.to(device), self.answers.to(device),
            None if self.wrong is None else self.wrong.to(device), self.answer_pos, meta,
        )


def _describe(t) -> str:
    return f"{type(t).__name__} of shape {tuple(t.shape)} and dtype {t.dtype}" if isinstance(t, Tensor) else type(t).__name__
