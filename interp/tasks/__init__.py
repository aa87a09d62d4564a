"""Synthetic prompt sets: clean / corrupted token pairs with the answers a metric reads.

Every method in `patching` and `probes` takes a `PromptSet`. Generators live in the submodules:
`interp.tasks.induction` (repeated random tokens), `interp.tasks.facts` (a templated knowledge
base), `interp.tasks.binding` (entities bound in context) and `interp.tasks.bio` (biographies of
individuals with paraphrases, pronouns, question rows and Zipf-like frequencies).
"""

from interp.tasks.promptset import PromptSet

__all__ = ["PromptSet"]
