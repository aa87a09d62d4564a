"""Word-level tokenizers for our synthetic tasks, saved and loaded the way TransformerLens wants."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from interp.errors import InputError

BOS = "<bos>"


def word_tokenizer(words: Sequence[str], directory: str | Path | None = None):
    """A whitespace word-level tokenizer: id 0 is ``<bos>`` (also used for padding), then ``words``.

    TransformerLens needs a tokenizer loaded from a directory (a bare object fails inside it), so
    this saves it to ``directory`` (a temporary one if None) and loads it back.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(words)
    if len(set(words)) != len(words) or BOS in words:
        raise InputError("Tokenizer words must be unique and must not include '<bos>'.")
    vocab = {BOS: 0, **{w: i + 1 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token=BOS))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, unk_token=BOS, pad_token=BOS)
    directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="interp-tok-"))
    fast.save_pretrained(str(directory))
    return PreTrainedTokenizerFast.from_pretrained(str(directory))


def plot_label(token: str) -> str:
    """A token string as a figure's tick label: newlines, tabs and carriage returns shown as ``\\n``,
    ``\\t``, ``\\r`` (a label never breaks a line), ``$`` escaped (matplotlib would read mathtext)."""
    return token.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r").replace("$", r"\$")
