"""Linear probes: does a linear read-out of an activation predict a property of the input?

    probe = LinearProbe(task="classification", C=1.0).fit(store[site], labels)
    probe.score(X_test, y_test)        # accuracy (classification) or R^2 (regression)
    probe.direction()                  # unit vector in the activation's own basis, [d]

A linear probe (Alain & Bengio 2016) fits a logistic regression (classification) or a ridge
regression (regression) from activations ``X [rows d]`` to labels ``y [rows]``. High held-out
accuracy says the information is *linearly decodable* at that site, not that the model uses it;
compare against a control task (Hewitt & Liang 2019, see `probes.sweep.control_labels`) and test
use by intervening along `LinearProbe.direction` (`probes.interventions`).

`LinearProbe` follows scikit-learn's estimator conventions: ``__init__`` only stores its
parameters, ``fit`` validates them and the data (naming the bad value), fitted attributes end in
``_``, and ``get_params`` / ``set_params`` / ``sklearn.base.clone`` work. ``coef_`` / ``intercept_``
are always in the *raw* basis: ``X @ coef_.T + intercept_`` is the decision function on raw
activations.

Standardisation. ``standardize=True`` centres the features and divides them all by *one* common
scale (the RMS of the centred activations), so ``C`` / ``alpha`` mean the same at every layer
whatever the residual-stream norm, while the L2 penalty stays rotation-invariant: rotating the
activations rotates ``direction()`` with them. ``standardize="per_feature"`` is scikit-learn's
``StandardScaler`` (unit variance per feature); it penalises high-variance coordinates more, which
biases ``direction()`` away from the planted one whenever the feature itself adds variance to some
coordinates (measured here: cosine 0.94 instead of 0.99 on a planted binary feature at C=1).
Use it when a few outlier dimensions dominate the norm. ``False`` fits the raw activations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from interp.errors import InputError, InterpError

TASKS = ("classification", "regression")


class ProbeNotFittedError(InterpError, NotFittedError):
    """A probe was used before `fit`."""


def as_numpy(x, name: str, dtype=None) -> np.ndarray:
    """A tensor / array-like as a numpy array (float64 for features unless ``dtype`` says otherwise)."""
    if isinstance(x, Tensor):
        x = x.detach().cpu()
        x = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
        x = x.numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} could not be read as a numeric array ({e}); give a tensor or numpy array.") from None


class LinearProbe(BaseEstimator):
    """A logistic-regression or ridge probe with scikit-learn's interface.

        probe = LinearProbe("classification", C=0.5).fit(X_train, y_train)
        probe.predict(X_test); probe.predict_proba(X_test); probe.score(X_test, y_test)
        u = probe.direction()            # [d] unit vector (binary / single-output probes)

    Parameters: ``task`` ("classification" | "regression"); ``C`` (inverse L2 strength of the
    logistic regression); ``alpha`` (L2 strength of the ridge); ``standardize`` (True: centre and
    divide by one common scale; "per_feature": unit variance per feature; False: raw);
    ``max_iter`` (solver iterations); ``random_state`` (solver seed).
    """

    def __init__(self, task: str = "classification", C: float = 1.0, alpha: float = 1.0,
                 standardize: bool | str = True, max_iter: int = 1000, random_state: int | None = 0):
        self.task = task
        self.C = C
        self.alpha = alpha
        self.standardize = standardize
        self.max_iter = max_iter
        self.random_state = random_state
        if task not in TASKS:  # the one parameter that decides what the estimator is: checked at once
            raise InputError(f"task={task!r} is not a probe task; use 'classification' or 'regression'.")

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        if self.task not in TASKS:
            raise InputError(f"task={self.task!r} is not a probe task; use 'classification' or 'regression'.")
        if self.task == "classification" and not (isinstance(self.C, int | float) and not isinstance(self.C, bool) and self.C > 0):
            raise InputError(f"C={self.C!r} must be a positive number (the inverse regularisation strength; 1.0 is a fair start).")
        if self.task == "regression" and not (isinstance(self.alpha, int | float) and not isinstance(self.alpha, bool) and self.alpha >= 0):
            raise InputError(f"alpha={self.alpha!r} must be a non-negative number (the ridge penalty; 1.0 is a fair start).")
        if not isinstance(self.max_iter, int) or isinstance(self.max_iter, bool) or self.max_iter < 1:
            raise InputError(f"max_iter={self.max_iter!r} must be a positive int.")
        if self.standardize not in (True, False, "per_feature") or self.standardize is None:
            raise InputError(f"standardize={self.standardize!r} must be True (one common scale), "
                             f"'per_feature' (unit variance per feature) or False (raw activations).")

    def _check_X(self, X, fitted: bool) -> np.ndarray:
        X = as_numpy(X, "X", np.float64)
        if X.ndim != 2:
            raise InputError(f"Activations X must be [rows d] (rank 2), got shape {X.shape}; flatten the other axes "
                             f"(probes.collect does this).")
        if X.shape[0] == 0:
            raise InputError("Activations X have no rows; collect some first.")
        if not np.isfinite(X).all():
            bad = ~np.isfinite(X)
            rows = np.unique(np.nonzero(bad)[0])
            raise InputError(
                f"Activations X contain {int(bad.sum())} NaN/inf values (in {len(rows)} rows, first row {int(rows[0])}). "
                f"Drop those rows or find where the model overflows (e.g. run in float32)."
            )
        if fitted and X.shape[1] != self.n_features_in_:
            raise InputError(f"X has {X.shape[1]} features but the probe was fitted on {self.n_features_in_}; use "
                             f"activations from the same site.")
        return X

    def _check_y(self, y, rows: int) -> np.ndarray:
        y = as_numpy(y, "labels y")
        if y.ndim == 0:
            raise InputError("labels y must be an array with one label per row, got a scalar.")
        if y.shape[0] != rows:
            raise InputError(f"Got {y.shape[0]} labels for {rows} rows of activations; give exactly one label per row "
                             f"(with positions='all', rows are every (prompt, position) pair: see store.prompt_ids).")
        if self.task == "classification":
            if y.ndim != 1:
                raise InputError(f"Classification labels must be 1-D [rows], got shape {y.shape}.")
            classes = np.unique(y)
            if len(classes) < 2:
                raise InputError(f"All {rows} labels are the same class ({classes[0]!r}); a classifier needs at least two "
                                 f"classes. Check the labels, or collect more varied prompts.")
        else:
            y = y.astype(np.float64)
            if not np.isfinite(y).all():
                raise InputError("Regression targets y contain NaN/inf; drop those rows.")
        return y

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise ProbeNotFittedError("This LinearProbe is not fitted yet; call probe.fit(X, y) first.")

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Float[Tensor, "rows d"] | np.ndarray, y: Any) -> LinearProbe:
        """Fit on activations ``X [rows d]`` and labels ``y [rows]``; returns self."""
        self._check_params()
        X = self._check_X(X, fitted=False)
        y = self._check_y(y, X.shape[0])
        self.n_features_in_ = X.shape[1]
        d = X.shape[1]
        if self.standardize == "per_feature":
            scaler = StandardScaler().fit(X)
            mean, scale = scaler.mean_, scaler.scale_
        elif self.standardize:
            mean = X.mean(axis=0)
            rms = float(np.sqrt(np.mean((X - mean) ** 2)))
            scale = np.full(d, rms if rms > 0 else 1.0)
        else:
            mean, scale = np.zeros(d), np.ones(d)
        self.mean_, self.scale_ = mean, scale
        Xs = (X - mean) / scale
        if self.task == "classification":
            est = LogisticRegression(C=float(self.C), max_iter=self.max_iter, random_state=self.random_state)
            est.fit(Xs, y)
            self.classes_ = est.classes_
        else:
            est = Ridge(alpha=float(self.alpha), random_state=self.random_state)
            est.fit(Xs, y)
        self.estimator_ = est
        coef = np.asarray(est.coef_, dtype=np.float64)
        # Back to the raw basis: w·(x - m)/s + b = (w/s)·x + (b - Σ w m / s).
        self.coef_ = coef / scale
        self.intercept_ = np.asarray(est.intercept_, dtype=np.float64) - (coef / scale) @ mean
        return self

    def _transform(self, X) -> np.ndarray:
        self._check_fitted()
        X = self._check_X(X, fitted=True)
        return (X - self.mean_) / self.scale_

    # ------------------------------------------------------------------ predicting
    def decision_function(self, X) -> np.ndarray:
        """Raw scores ``X @ coef_.T + intercept_`` ([rows] for binary / single output)."""
        Xs = self._transform(X)
        if self.task == "classification":
            return self.estimator_.decision_function(Xs)
        return self.estimator_.predict(Xs)

    def predict(self, X) -> np.ndarray:
        """Predicted class (classification) or value (regression) per row."""
        Xs = self._transform(X)
        return self.estimator_.predict(Xs)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``[rows n_classes]`` (columns in ``classes_`` order); classification only."""
        if self.task != "classification":
            raise InputError("predict_proba is only defined for task='classification'; use predict for regression.")
        Xs = self._transform(X)
        return self.estimator_.predict_proba(Xs)

    def score(self, X, y) -> float:
        """Accuracy (classification) or R² (regression) on ``X, y``."""
        self._check_fitted()
        X = self._check_X(X, fitted=True)
        y = as_numpy(y, "labels y")
        if y.shape[0] != X.shape[0]:
            raise InputError(f"Got {y.shape[0]} labels for {X.shape[0]} rows of activations; give one label per row.")
        pred = self.predict(X)
        if self.task == "classification":
            return float(accuracy_score(y, pred))
        return float(r2_score(y.astype(np.float64), pred))

    def direction(self, output: int | None = None) -> Float[Tensor, " d"]:
        """The probe's weight vector in the activation's raw basis, normalised to unit length.

        For a binary or single-output probe it points towards the positive class / larger values.
        A multi-class (or multi-output) probe has one vector per class: pick it with ``output``.
        """
        self._check_fitted()
        coef = np.atleast_2d(self.coef_)
        if output is None:
            if coef.shape[0] != 1:
                raise InputError(f"This probe has {coef.shape[0]} weight vectors (one per class/output); choose one with "
                                 f"direction(output=i), i in 0..{coef.shape[0] - 1}.")
            output = 0
        if not 0 <= output < coef.shape[0]:
            raise InputError(f"output={output} is out of range; this probe has {coef.shape[0]} weight vectors.")
        w = coef[output]
        norm = np.linalg.norm(w)
        if norm == 0:
            raise InputError("The probe's weights are all zero (too much regularisation?), so it has no direction; raise C or lower alpha.")
        return torch.from_numpy(w / norm).float()
