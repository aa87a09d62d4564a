"""One function per reproduced figure; ``interp reproduce NAME|all`` runs them.

Each function takes ``out_dir`` (default: ``assets/figures`` in a checkout, ``./interp-figures``
elsewhere; see `default_out_dir`) and ``model`` (default: the shipped
checkpoint), draws without training, writes ``NAME.png`` and ``NAME.svg``, and returns a
`FigureResult` with the paths and the numbers it drew, so tests can compare them. Every figure
function is importable from here: ``from interp.figures import facts_causal_trace``.
"""

from interp.figures import (  # noqa: F401  (each registers its figures)
    binding,
    facts,
    facts_bio,
    facts_bio_sae,
    induction,
    smollm2_agreement,
    smollm2_facts,
    smollm2_induction,
    smollm2_ioi,
)

# isort: split
from interp.figures import discovery  # noqa: F401  (registered after the cards': its figures follow theirs in the report)

# isort: split
from interp.figures import bio  # noqa: F401  (the biography experiment, from stored run histories)

# isort: split
from interp.figures import binding_experiment  # noqa: F401  (the binding experiment, from stored attempt records)

# isort: split
from interp.figures.base import FIGURES, FigureResult, default_out_dir, reproduce

globals().update(FIGURES)

__all__ = ["FIGURES", "FigureResult", "default_out_dir", "reproduce", *FIGURES]
