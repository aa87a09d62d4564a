"""Controlled experiments that train many small models and store their histories under ``assets/experiments``.

Run from the repository root: ``python -m experiments.bio list`` (see `experiments.bio`). Nothing in
`interp`, `patching` or `probes` imports from here; the figures read only the stored JSON.
"""
