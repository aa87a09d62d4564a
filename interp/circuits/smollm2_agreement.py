"""Subject-verb agreement in SmolLM2-135M located with DAS (Arora et al. 2024, CausalGym; Geiger et al. 2023).

CausalGym asks where a language model holds a linguistic variable and how well methods that
intervene (DAS) find it compared with methods that only read activations (a probe's weights, the
difference of class means, the first principal component, a random direction). The task is its
subject-verb agreement with an attractor, ``The {subject} next to the {attractor}`` → `` is`` /
`` are`` (`interp.tasks.agreement`); the variable is the subject's number. An interchange
intervention copies one direction of a site from a source prompt into a base prompt whose subject
has the other number; the interchange intervention accuracy (IIA) is the share of held-out pairs
whose `` is`` / `` are`` comparison flips to the source's verb (CausalGym's two-way scoring: the
model's argmax over the whole vocabulary is a verb only part of the time).

- *Nouns split*: DAS and the baselines are fitted on pairs drawn from the first `N_TRAIN_NOUNS`
  noun pairs of `interp.tasks.agreement.NOUNS`; development pairs (seed `DEV_SEED`) reuse those
  nouns; held-out pairs (seed `HELD_OUT_SEED`) use only the other nouns, as subject and attractor.
- *Stored sweep* (``python -m interp.circuits.smollm2_agreement --measure``, `sweep_file`): 1-D DAS
  at ``resid_post`` of `SWEEP_LAYERS` × `SWEEP_POSITIONS`, warm-started from the difference of class
  means (`patching.train_das(init=)`), with the baselines' IIA on development and held-out pairs at
  every cell (the probe, slower to fit, only at the best cell, live).
- *Live claims* re-score the stored DAS directions on held-out pairs (compared with the stored IIA
  within ±0.03) and re-fit the baselines at the best cell.

    from interp import circuits
    print(circuits.evaluate("smollm2-agreement").table())
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from interp.circuits import EXACT, Card, Claim, Subject
from interp.errors import InputError
from interp.sites import Site
from interp.tasks import agreement

N_TRAIN_NOUNS = 10  # noun pairs 0..9 train and develop; 10..19 are held out
N_TRAIN, N_DEV, N_HELD_OUT = 64, 32, 32  # counterfactual pairs
TRAIN_SEED, DEV_SEED, HELD_OUT_SEED = 0, 1, 2
SWEEP_LAYERS = (2, 10, 18, 26)
SWEEP_POSITIONS = (2, 6)  # the subject, the attractor (the last token, where the verb is predicted)
SWEEP_METHODS = ("mean_diff", "pca", "random")  # baselines at every cell (the probe, slower to fit, at the best cell)
METHODS = ("probe", *SWEEP_METHODS)
DAS_ARGS = dict(k=1, epochs=2, batch_size=32, lr=1e-2, seed=0)
STORED = "cards/smollm2-agreement/das_sweep.json"  # under the assets directory (checkout or wheel)
COMMAND = "python -m interp.circuits.smollm2_agreement --measure"


# ---------------------------------------------------------------------------- data


def nouns_of(model) -> list[tuple[str, str]]:
    """The task's noun pairs that are single tokens for ``model``'s tokenizer (all 20 for SmolLM2)."""
    return [p for p in agreement.NOUNS if all(agreement._one_token(model.tokenizer, w) is not None for w in p)]


def sampler_over(model, nouns: list[tuple[str, str]]):
    """`interp.tasks.agreement`'s sampler restricted to ``nouns`` (subject and attractor both drawn from them)."""
    if len(nouns) < 2:
        raise InputError(f"The agreement sampler needs at least 2 noun pairs, got {len(nouns)}.")

    def sampler(rng: np.random.Generator):
        a, b = rng.choice(len(nouns), size=2, replace=False)
        plural, attractor = (int(x) for x in rng.integers(0, 2, size=2))
        text = agreement.TEMPLATE.format(subject=nouns[a][plural], attractor=nouns[b][attractor])
        return model.to_tokens(text)[0], (plural, attractor)

    return sampler


def datasets(model) -> dict:
    """``{"train", "dev", "held_out"}`` counterfactual datasets (every pair changes the verb)."""
    from patching import counterfactual_dataset

    _, causal_model, choices = agreement.agreement_task(model)
    nouns = nouns_of(model)
    train_nouns, held_out_nouns = nouns[:N_TRAIN_NOUNS], nouns[N_TRAIN_NOUNS:]
    make = lambda pool, n, seed: counterfactual_dataset(sampler_over(model, pool), causal_model, n=n, seed=seed,  # noqa: E731
                                                        require_change=True, choices=choices)
    return {"train": make(train_nouns, N_TRAIN, TRAIN_SEED), "dev": make(train_nouns, N_DEV, DEV_SEED),
            "held_out": make(held_out_nouns, N_HELD_OUT, HELD_OUT_SEED)}


def _data(s: Subject) -> dict:
    return s.memo("datasets", lambda: datasets(s.model))


def site_activations(model, data, site: Site) -> tuple[Tensor, Int[Tensor, " n"]]:
    """Activations at ``site`` of every base and source prompt of ``data``, and the subject's number of each."""
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.cat([data.base, data.source]), [site])
    return cache[site].float(), torch.tensor([v[0] for v in data.base_vars + data.source_vars])


# ---------------------------------------------------------------------------- the stored sweep


@torch.no_grad()
def iia(model, site: Site, data, directions: dict[str, Tensor]) -> dict[str, float]:
    """IIA of a 1-D interchange along each direction on ``data`` (scored on ``data.choices``), with the
    source activations computed once for every direction (the same number as
    `patching.evaluate_directions`, in one forward per direction plus one)."""
    from patching.interchange import interchange_with

    _, cache = model.run_with_cache(data.source, [site])
    choices = data.choices
    out = {}
    for method, v in directions.items():
        v = torch.as_tensor(v).float().reshape(-1)
        logits = interchange_with(model, data.base, cache[site], site, (v / v.norm())[:, None])[:, data.answer_pos]
        predicted = choices[logits[:, choices].argmax(-1)]
        out[method] = float((predicted == data.labels).float().mean())
    return out


def cell(model, data: dict, layer: int, pos: int) -> dict:
    """DAS (warm start from the mean difference) and the baselines at ``resid_post`` of ``layer``, ``pos``:
    directions fitted on the training pairs, IIA on the development and held-out pairs."""
    from patching import baseline_directions, train_das

    site = Site("resid_post", layer, pos=pos)
    acts, number = site_activations(model, data["train"], site)
    directions = baseline_directions(acts, number, methods=SWEEP_METHODS)
    das = train_das(model, site, data["train"], eval_dataset=data["dev"], init=directions["mean_diff"], progress=False, **DAS_ARGS)
    directions["das"] = das.basis[:, 0]
    out = {"layer": layer, "pos": pos, "das_direction": [float(x) for x in das.basis[:, 0]], "das_steps": len(das.losses),
           "das_train_iia": das.train_iia}
    for split in ("dev", "held_out"):
        out[split] = iia(model, site, data[split], directions)
    return out


def measure(model, progress: bool = True) -> dict:
    """The stored measurement: the DAS sweep with the baselines at every cell (minutes on one CPU thread)."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    data = datasets(model)
    cells = [cell(model, data, layer, pos) for layer, pos in
             tqdm([(a, p) for a in SWEEP_LAYERS for p in SWEEP_POSITIONS], desc="DAS sweep", disable=not progress)]
    return {"command": COMMAND, "model": "smollm2-135m", "das_args": DAS_ARGS, "init": "mean_diff",
            "n_pairs": {"train": N_TRAIN, "dev": N_DEV, "held_out": N_HELD_OUT}, "cells": cells,
            "seconds": time.perf_counter() - start}


def sweep_file() -> Path:
    """Where the stored sweep lives: ``assets/cards/smollm2-agreement/das_sweep.json`` in a checkout,
    the same path under the installed package's assets in a wheel."""
    from interp import zoo

    return zoo.assets_dir() / STORED


def stored(path: Path | None = None) -> dict:
    """The stored sweep (`COMMAND` writes it; default `sweep_file`)."""
    path = sweep_file() if path is None else Path(path)
    if not path.is_file():
        raise InputError(f"{path} is missing: measure it with `{COMMAND}` (minutes on one CPU thread).")
    return json.loads(path.read_text())


def best_cell(sweep: dict, split: str = "dev") -> dict:
    """The sweep cell with the highest DAS IIA on ``split`` (the earliest layer among ties)."""
    return max(sweep["cells"], key=lambda c: (c[split]["das"], -c["layer"]))


# ---------------------------------------------------------------------------- claims


def rescore(model, data, entry: dict) -> float:
    """IIA on ``data`` of a stored DAS direction, re-measured on ``model``."""
    return iia(model, Site("resid_post", entry["layer"], pos=entry["pos"]), data, {"das": torch.tensor(entry["das_direction"])})["das"]


def measure_das_site(s: Subject) -> dict[str, float]:
    sweep = stored()
    best = best_cell(sweep)
    subject_cells = [c for c in sweep["cells"] if c["pos"] == agreement.SUBJECT_POS]
    last_cells = [c for c in sweep["cells"] if c["pos"] == max(SWEEP_POSITIONS)]
    late = last_cells[-1]
    held_out = _data(s)["held_out"]
    return {"best_layer": best["layer"], "best_pos": best["pos"], "best_held_out": best["held_out"]["das"],
            "best_rescored": rescore(s.model, held_out, best), "subject_last_layer": subject_cells[-1]["held_out"]["das"],
            "last_first_layer": last_cells[0]["held_out"]["das"], "last_last_layer": late["held_out"]["das"],
            "last_rescored": rescore(s.model, held_out, late)}


def measure_baselines(s: Subject) -> dict[str, float]:
    from patching import baseline_directions

    best = best_cell(stored())
    site = Site("resid_post", best["layer"], pos=best["pos"])
    acts, number = site_activations(s.model, _data(s)["train"], site)
    directions = baseline_directions(acts, number, methods=METHODS)
    directions["das"] = torch.tensor(best["das_direction"])
    return {"layer": best["layer"], "pos": best["pos"], **iia(s.model, site, _data(s)["held_out"], directions)}


CLAIMS = (
    Claim(
        "das_site",
        f"DAS locates the subject's number: at the best cell of the sweep (chosen on development pairs) it sits at the "
        f"subject token (held-out nouns: IIA ≥ 0.9, the stored direction re-scored live within ±0.03); by layer "
        f"{SWEEP_LAYERS[-1]} it is at the last token (IIA ≥ 0.8), where in layer {SWEEP_LAYERS[0]} it is not (IIA ≤ 0.2)",
        "smollm2_agreement_das", measure_das_site,
        lambda n: (n["best_pos"] == agreement.SUBJECT_POS and n["best_held_out"] >= 0.9
                   and abs(n["best_rescored"] - n["best_held_out"]) <= 0.03 and n["last_last_layer"] >= 0.8
                   and n["last_first_layer"] <= 0.2),
        lambda n: (f"best cell layer {int(n['best_layer'])}, position {int(n['best_pos'])}: IIA {n['best_held_out']:.3f} "
                   f"(re-scored {n['best_rescored']:.3f}); last token: layer {SWEEP_LAYERS[0]} {n['last_first_layer']:.3f}, "
                   f"layer {SWEEP_LAYERS[-1]} {n['last_last_layer']:.3f} (re-scored {n['last_rescored']:.3f}); subject token "
                   f"in layer {SWEEP_LAYERS[-1]}: {n['subject_last_layer']:.3f} (reported, not tested)"),
        tolerances={"best_layer": EXACT, "best_pos": EXACT},
    ),
    Claim(
        "baselines",
        "At the best cell, on held-out nouns, DAS (IIA ≥ 0.9) is matched by directions read without interventions, the "
        "probe's and the difference of class means (each ≥ DAS − 0.1), while the first principal component and a random "
        "direction stay ≤ 0.2",
        "smollm2_agreement_das", measure_baselines,
        lambda n: (n["das"] >= 0.9 and n["probe"] >= n["das"] - 0.1 and n["mean_diff"] >= n["das"] - 0.1
                   and n["pca"] <= 0.2 and n["random"] <= 0.2),
        lambda n: (f"layer {int(n['layer'])}, position {int(n['pos'])}: DAS {n['das']:.3f}, probe {n['probe']:.3f}, "
                   f"mean difference {n['mean_diff']:.3f}, PCA {n['pca']:.3f}, random {n['random']:.3f}"),
        tolerances={"layer": EXACT, "pos": EXACT},
    ),
)

CARD = Card("smollm2-agreement", "smollm2-135m", "Subject-verb agreement in SmolLM2-135M (DAS, CausalGym)", CLAIMS,
            test_file="tests/circuits/test_smollm2_agreement_card.py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="run the DAS sweep and write it (default: assets/cards/smollm2-agreement/das_sweep.json)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.measure:
        parser.print_help()
        return 2
    import interp

    torch.manual_seed(0)
    result = measure(interp.load("smollm2-135m"))
    out = sweep_file() if args.out is None else args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
