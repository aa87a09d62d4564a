"""One error hierarchy. Every message says what was wrong and what to do about it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InterpError(ValueError):
    """Base class of every error this toolkit raises on bad input."""


class SiteError(InterpError, KeyError):
    """An unknown site kind or hook name, or a layer / head / position out of range."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class InputError(InterpError):
    """Tokens, prompts or arguments of the wrong type, shape, dtype or device."""


class LoadError(InterpError):
    """A path that is not a model, an unknown model name, or an unknown backend."""


def closest(word: str, options: Iterable[str]) -> str:
    """A ' Did you mean ...?' suffix naming the closest option, or '' if none is close."""
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""
