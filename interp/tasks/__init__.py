"""Synthetic prompt sets: clean / corrupted token pairs with the answers a metric reads.

Every method in `patching` and `probes` takes a `PromptSet`. Generators live in the submodules:
`interp.tasks.induction` (repeated random tokens), and later facts and binding.
"""

from interp.tasks.promptset import PromptSet

__all__ = ["PromptSet"]
