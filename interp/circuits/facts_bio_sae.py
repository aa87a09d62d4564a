"""A sparse autoencoder on ``facts-bio``'s residual stream at the name, as measured claims.

The facts-bio card finds every attribute linearly decodable at the last name token after block 3
(``resid_post`` of layer 3, the name probe's best site; probes 0.92). This card asks whether a
dictionary learnt without labels (`probes.sae`, Bricken et al. 2023; Gao et al. 2024's TopK)
finds the attributes as features there, the way SAEs on large models find features for cities or
companies (Templeton et al. 2024):

- **the SAE** (`SITE`, `D_SAE` latents, TopK with k = `K`) is trained by `train` on the activations
  at the last name token of ``<bos> first last`` and of every name mention in
  `BIOS_PER_INDIVIDUAL` training-style biographies of each of the 1,000 individuals (plus a question
  row for those in the question set), drawn with `DATA_SEED`; shipped in SAELens's format at
  `SHIPPED` (``python -m interp.circuits.facts_bio_sae --train``);
- **reconstruction**: L0, FVU and dead latents on biographies drawn with the evaluation seed
  (`interp.tasks.bio.EVAL_SEED`, never trained on), and on ``<bos> first last``;
- **loss recovered**: at ``<bos> first last`` the next token is the profile's first attribute, one
  of the individual's 4 (in random order), so the loss is the mean over the 4 relations of
  ``-log p(attribute)`` at the name; the SAE's reconstruction replaces the activation at the name
  only, against mean ablation there (Bricken et al.'s "loss recovered");
- **features against probes**: for each attribute value, the feature whose firing best matches
  "this individual has the value" (F1 on the even-numbered individuals) is scored on the odd ones
  (precision: share of the individuals it fires for that have the value; recall: share of those
  with the value it fires for); beside it, a logistic-regression probe fit on the even individuals
  and scored on the odd ones at the same activations (macro precision / recall and accuracy);
- **feature edits**: ablating a value's best feature at the name (keeping the reconstruction
  error, `probes.sae.ablate_features`) for the odd individuals holding the value, and the change
  in ``log p`` of that value against the change for their other three attributes.

Block 3 is the last block, so an edit there acts only on the prediction made at the name (the
profile's next token); it cannot reach later positions.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from interp.circuits import EXACT, RELATIVE, Card, Claim, Subject
from interp.sites import Site
from interp.tasks import bio

SITE = Site("resid_post", 3)
D_SAE, K, STEPS, BATCH, SEED = 512, 16, 3000, 1024, 0
BIOS_PER_INDIVIDUAL, DATA_SEED = 8, 1
SHIPPED = "sae/facts-bio-L3"  # under the assets directory
EDIT_DROP_NATS = 1.0  # an edit "works" for a value when log p(value) falls by at least this much


def shipped_dir() -> Path:
    from interp import zoo

    return zoo.assets_dir() / SHIPPED


def load_sae(path: str | Path | None = None):
    """The shipped SAE (or the one saved at ``path``)."""
    from probes.sae import load_saelens

    return load_saelens(shipped_dir() if path is None else path)


def world_of(s: Subject) -> bio.Biographies:
    from interp.circuits import facts_bio

    return facts_bio.world_of(s)


def sae_of(s: Subject):
    """The SAE the claims read: ``s.memo`` may be pre-filled under "sae" (another SAE); else the shipped one."""
    return s.memo("sae", load_sae)


# ---------------------------------------------------------------------------- data
def name_tokens(world: bio.Biographies, individuals=None) -> torch.Tensor:
    """``<bos> first last`` for each individual ``[n 3]``: the probe's prompt."""
    who = range(len(world.names)) if individuals is None else individuals
    return torch.tensor([[bio.BOS, bio.IDS[world.names[i][0]], bio.IDS[world.names[i][1]]] for i in who])


def biography_rows(world: bio.Biographies, per_individual: int, seed: int, questions: bool = True):
    """``per_individual`` biographies of every individual (and one question row for those in the
    question set), drawn with ``seed``; returns tokens ``[rows pos]``, the mask of the last name
    token of every name mention ``[rows pos]`` and the individual of each row."""
    in_q = set(world.question_set)
    rows, owner = [], []
    for i in range(len(world.names)):
        rng = random.Random(seed * 1_000_003 + i)
        for _ in range(per_individual):
            rows.append(world.biography(i, rng))
            owner.append(i)
        if questions and i in in_q:
            rows.append(world.question_row(i, rng))
            owner.append(i)
    tokens, _, _ = bio.pad_rows(rows)
    owner = torch.tensor(owner)
    firsts = torch.tensor([bio.IDS[n[0]] for n in world.names])[owner]
    lasts = torch.tensor([bio.IDS[n[1]] for n in world.names])[owner]
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, 1:] = (tokens[:, 1:] == lasts[:, None]) & (tokens[:, :-1] == firsts[:, None])
    return tokens, mask, owner


def name_activations(model, tokens, mask) -> torch.Tensor:
    """Rows ``[n d_model]`` of `SITE` at the positions of ``mask``."""
    from probes import collect

    return collect(model, tokens, [SITE], positions=mask, progress=False, batch_size=256)[SITE]


def training_activations(model, world: bio.Biographies, per_individual: int = BIOS_PER_INDIVIDUAL,
                         seed: int = DATA_SEED) -> torch.Tensor:
    """The SAE's training rows: `SITE` at every name mention of the biographies, then at ``<bos> first last``."""
    tokens, mask, _ = biography_rows(world, per_individual, seed)
    name = name_tokens(world)
    name_mask = torch.zeros_like(name, dtype=torch.bool)
    name_mask[:, 2] = True
    return torch.cat([name_activations(model, tokens, mask), name_activations(model, name, name_mask)])


def train(model, world: bio.Biographies, out_dir: str | Path | None = None, seed: int = SEED, steps: int = STEPS,
          d_sae: int = D_SAE, k: int = K, progress: bool = True):
    """Train the card's SAE (TopK) on `training_activations`; save it in SAELens's format to
    ``out_dir`` when given. Returns ``(sae, history, info)``."""
    from probes.sae import save_saelens, train_sae

    start = time.process_time()
    X = training_activations(model, world)
    collect_s = time.process_time() - start
    sae, history = train_sae(X, d_sae, kind="topk", k=k, steps=steps, batch_size=BATCH, seed=seed, progress=progress)
    sae.metadata.update(hook_name=SITE.hook_name, model_name="facts-bio", seed=seed, steps=steps)
    info = {"rows": int(X.shape[0]), "collect_cpu_s": round(collect_s, 1), "train_cpu_s": round(time.process_time() - start - collect_s, 1),
            "command": f"python -m interp.circuits.facts_bio_sae --train --seed {seed}", "d_sae": d_sae, "k": k, "steps": steps,
            "batch_size": BATCH, "data": f"{BIOS_PER_INDIVIDUAL} biographies per individual (seed {DATA_SEED}) + question rows + "
            f"<bos> first last; last name token of every mention; {SITE}",
            "final_fvu": float(history.to_dataframe()["fvu"].iloc[-1])}
    if out_dir is not None:
        save_saelens(sae, out_dir, overwrite=True)
        (Path(out_dir) / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    return sae, history, info


# ---------------------------------------------------------------------------- SAEs for feature circuits
#: layers below `SITE` that carry a token SAE for feature circuits (`probes.sae.circuits`); shipped at
#: ``assets/sae/facts-bio-L{layer}``. Unlike the card's SAE (the name token only) they read every token.
CIRCUIT_LAYERS = (0, 1, 2)
TOKEN_BIOS_PER_INDIVIDUAL = 2


def circuit_sae_dir(layer: int) -> Path:
    """Where the token SAE of ``resid_post`` of ``layer`` is shipped."""
    from interp import zoo

    return zoo.assets_dir() / f"sae/facts-bio-L{layer}"


def load_circuit_saes(layers=CIRCUIT_LAYERS, with_name_sae: bool = True) -> dict:
    """``{Site: SAE}``: the shipped token SAEs at ``resid_post`` of ``layers``, and (``with_name_sae``)
    the card's SAE at `SITE`, ready for `probes.sae.feature_attribution`."""
    from probes.sae import load_saelens

    saes = {Site("resid_post", layer): load_saelens(circuit_sae_dir(layer)) for layer in layers}
    if with_name_sae:
        saes[SITE] = load_sae()
    return saes


def token_activations(model, world: bio.Biographies, layer: int, per_individual: int = TOKEN_BIOS_PER_INDIVIDUAL,
                      seed: int = DATA_SEED) -> torch.Tensor:
    """``resid_post`` of ``layer`` at every real token (padding left out) of ``per_individual``
    biographies per individual plus the question rows (drawn with ``seed``): ``[rows d_model]``."""
    from probes import collect

    tokens, mask, _ = biography_rows(world, per_individual, seed)
    real = torch.zeros_like(tokens, dtype=torch.bool)
    real[:, 0] = True
    real[:, 1:] = tokens[:, 1:] != bio.BOS  # rows are right-padded with <bos>
    site = Site("resid_post", layer)
    return collect(model, tokens, [site], positions=real, progress=False, batch_size=256)[site]


def train_token_sae(model, world: bio.Biographies, layer: int, out_dir: str | Path | None = None, seed: int = SEED,
                    steps: int = STEPS, d_sae: int = D_SAE, k: int = K, progress: bool = True):
    """A TopK SAE (the card's recipe: `D_SAE` latents, k = `K`, `STEPS` steps) on `token_activations`
    of ``layer``, saved in SAELens's format to ``out_dir`` when given. Returns ``(sae, history, info)``.
    Rerun all with ``python -m interp.circuits.facts_bio_sae --train-circuit-saes``."""
    from probes.sae import save_saelens, train_sae

    start = time.process_time()
    X = token_activations(model, world, layer)
    collect_s = time.process_time() - start
    sae, history = train_sae(X, d_sae, kind="topk", k=k, steps=steps, batch_size=BATCH, seed=seed, progress=progress)
    site = Site("resid_post", layer)
    sae.metadata.update(hook_name=site.hook_name, model_name="facts-bio", seed=seed, steps=steps)
    info = {"rows": int(X.shape[0]), "collect_cpu_s": round(collect_s, 1),
            "train_cpu_s": round(time.process_time() - start - collect_s, 1),
            "command": f"python -m interp.circuits.facts_bio_sae --train-circuit-saes --seed {seed}", "d_sae": d_sae, "k": k,
            "steps": steps, "batch_size": BATCH,
            "data": f"{TOKEN_BIOS_PER_INDIVIDUAL} biographies per individual (seed {DATA_SEED}) + question rows; every real "
            f"token; {site}", "final_fvu": float(history.to_dataframe()["fvu"].iloc[-1])}
    if out_dir is not None:
        save_saelens(sae, out_dir, overwrite=True)
        (Path(out_dir) / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    return sae, history, info


# ---------------------------------------------------------------------------- measurements
def _name_run(s: Subject) -> dict:
    """``<bos> first last`` of every individual: the activation at the name and the log-probabilities there."""

    def compute():
        world = world_of(s)
        tokens = name_tokens(world)
        with torch.no_grad():
            logits, cache = s.model.run_with_cache(tokens, [SITE])
        return {"x": cache[SITE][:, 2].float(), "logp": torch.log_softmax(logits[:, 2].float(), -1)}

    return s.memo("name_run", compute)


def _values_of(world: bio.Biographies, relation: str) -> np.ndarray:
    return np.array(world.attributes[relation])


def attribute_ids(world: bio.Biographies) -> torch.Tensor:
    """``[individual relation]``: the token id of each individual's attribute for each relation."""
    return torch.tensor([[bio.IDS[world.attributes[r][i]] for r in world.config.relations] for i in range(len(world.names))])


def profile_loss(logp: torch.Tensor, ids: torch.Tensor) -> float:
    """Mean over individuals and relations of ``-log p(attribute)`` at the name."""
    return float(-logp.gather(1, ids).mean())


def measure_reconstruction(s: Subject) -> dict[str, float]:
    from probes.sae import evaluate_sae

    sae = sae_of(s)
    world = world_of(s)

    def held_out():
        tokens, mask, _ = biography_rows(world, 1, bio.EVAL_SEED, questions=False)
        return name_activations(s.model, tokens, mask)

    X = s.memo("eval_rows", held_out)
    ev, ev_name = evaluate_sae(sae, X), evaluate_sae(sae, _name_run(s)["x"])
    return {"l0": ev.l0, "fvu": ev.fvu, "dead_share": ev.dead.numel() / sae.d_sae, "dense_share": ev.dense.numel() / sae.d_sae,
            "name_fvu": ev_name.fvu, "name_l0": ev_name.l0, "rows": ev.n_rows, "d_sae": sae.d_sae}


def measure_loss_recovered(s: Subject) -> dict[str, float]:
    from probes.sae import splice_sae

    sae, world = sae_of(s), world_of(s)
    run = _name_run(s)
    ids = attribute_ids(world)
    tokens = name_tokens(world)
    at = Site(SITE.kind, SITE.layer, pos=2)
    mean = run["x"].mean(0)
    losses = {"clean": profile_loss(run["logp"], ids)}
    for name, edit in (("spliced", splice_sae(sae)), ("mean", lambda act: mean.to(act.dtype).expand_as(act).clone())):
        with torch.no_grad(), s.model.edit({at: edit}):
            logp = torch.log_softmax(s.model(tokens)[:, 2].float(), -1)
        losses[name] = profile_loss(logp, ids)
    recovered = (losses["mean"] - losses["spliced"]) / (losses["mean"] - losses["clean"])
    return {"loss_clean": losses["clean"], "loss_spliced": losses["spliced"], "loss_mean_ablated": losses["mean"],
            "recovered": recovered}


def best_features(f_on: np.ndarray, labels: np.ndarray, select: np.ndarray) -> dict[str, int]:
    """For each value of ``labels``: the feature whose firing (``f_on [n d_sae]``, bool) best matches
    the value by F1 over the individuals in ``select``."""
    out = {}
    fired = f_on[select].sum(0)
    for v in np.unique(labels):
        y = labels[select] == v
        tp = (f_on[select] & y[:, None]).sum(0)
        out[str(v)] = int((2 * tp / np.maximum(fired + y.sum(), 1)).argmax())
    return out


def feature_table(s: Subject) -> dict:
    """Per relation and value: the best feature (selected on even individuals) and its precision,
    recall and the value's share on the odd ones; plus the probe's macro precision / recall and
    accuracy on the same split. Memoised: the claims, the figure and the notebook share it."""

    def compute():
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import precision_recall_fscore_support

        world, sae = world_of(s), sae_of(s)
        x = _name_run(s)["x"]
        with torch.no_grad():
            f_on = (sae.encode(x.to(sae.device, sae.dtype)) > 0).cpu().numpy()
        n = len(world.names)
        even = np.arange(n) % 2 == 0
        odd = ~even
        X = x.numpy()
        out: dict = {}
        for r in world.config.relations:
            labels = _values_of(world, r)
            best = best_features(f_on, labels, even)
            rows = {}
            for v, j in best.items():
                y = labels[odd] == v
                fires = f_on[odd, j]
                tp = int((fires & y).sum())
                rows[v] = {"feature": j, "precision": tp / max(int(fires.sum()), 1), "recall": tp / max(int(y.sum()), 1),
                           "share": float(y.mean()), "holders": int(y.sum())}
            probe = LogisticRegression(max_iter=2000, C=1.0).fit(X[even], labels[even])
            pred = probe.predict(X[odd])
            p, rc, _, _ = precision_recall_fscore_support(labels[odd], pred, average="macro", zero_division=0)
            out[r] = {"values": rows, "probe_precision": float(p), "probe_recall": float(rc),
                      "probe_accuracy": float((pred == labels[odd]).mean())}
        return out

    return s.memo("feature_table", compute)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def measure_features(s: Subject) -> dict[str, float]:
    table = feature_table(s)
    out: dict[str, float] = {}
    for r, t in table.items():
        vals = list(t["values"].values())
        out[f"{r}_precision"] = float(np.mean([v["precision"] for v in vals]))
        out[f"{r}_recall"] = float(np.mean([v["recall"] for v in vals]))
        out[f"{r}_f1"] = float(np.mean([_f1(v["precision"], v["recall"]) for v in vals]))
        out[f"{r}_chance"] = float(np.mean([v["share"] for v in vals]))
        out[f"{r}_probe_f1"] = _f1(t["probe_precision"], t["probe_recall"])
        out[f"{r}_probe_accuracy"] = t["probe_accuracy"]
    relations = list(table)
    out["values_monosemantic"] = float(sum(v["precision"] >= 0.5 and v["recall"] >= 0.5 for t in table.values() for v in t["values"].values()))
    out["values"] = float(sum(len(t["values"]) for t in table.values()))
    out["min_f1_over_chance"] = float(min(out[f"{r}_f1"] / out[f"{r}_chance"] for r in relations))
    out["min_probe_gap"] = float(min(out[f"{r}_probe_f1"] - out[f"{r}_f1"] for r in relations))
    return out


def edit_effects(s: Subject) -> dict:
    """For every relation and value: ablate the value's best feature at the name for the odd
    individuals holding the value; the mean change of ``log p`` of that value, and of their other
    relations' attributes (mean absolute change), at the name. Memoised."""

    def compute():
        from probes.sae import ablate_features

        world, sae, table = world_of(s), sae_of(s), feature_table(s)
        run = _name_run(s)
        ids = attribute_ids(world)
        at = Site(SITE.kind, SITE.layer, pos=2)
        relations = list(world.config.relations)
        out: dict = {}
        odd = np.arange(len(world.names)) % 2 == 1
        with torch.no_grad():
            f_on = (sae.encode(run["x"].to(sae.device, sae.dtype)) > 0).cpu().numpy()
        for ri, r in enumerate(relations):
            labels = _values_of(world, r)
            for v, row in table[r]["values"].items():
                who = torch.from_numpy(np.nonzero(odd & (labels == v))[0])
                if len(who) == 0:
                    continue
                with torch.no_grad(), s.model.edit({at: ablate_features(sae, [row["feature"]])}):
                    logp = torch.log_softmax(s.model(name_tokens(world, who.tolist()))[:, 2].float(), -1)
                delta = logp.gather(1, ids[who]) - run["logp"][who].gather(1, ids[who])  # [who relation]
                others = [j for j in range(len(relations)) if j != ri]
                fired = torch.from_numpy(f_on[who.numpy(), row["feature"]])
                out[(r, v)] = {"target": float(delta[:, ri].mean()), "others": float(delta[:, others].abs().mean()),
                               "feature": row["feature"], "fired": int(fired.sum()),
                               "target_fired": float(delta[fired, ri].mean()) if fired.any() else float("nan"),
                               "others_fired": float(delta[fired][:, others].abs().mean()) if fired.any() else float("nan")}
        return out

    return s.memo("edit_effects", compute)


def measure_edits(s: Subject) -> dict[str, float]:
    effects = edit_effects(s)
    targets = np.array([e["target"] for e in effects.values()])
    others = np.array([e["others"] for e in effects.values()])
    works = (targets <= -EDIT_DROP_NATS) & (others <= 0.5 * -targets)
    fired = [e for e in effects.values() if e["fired"] > 0]
    tf = np.array([e["target_fired"] for e in fired])
    of = np.array([e["others_fired"] for e in fired])
    return {"values_fired": float(len(fired)), "median_target_fired": float(np.median(tf)),
            "median_others_fired": float(np.median(of)),
            "share_fired_selective": float(((tf <= -EDIT_DROP_NATS) & (of <= 0.5 * -tf)).mean()),
            "share_fired_target_beats_others": float((-tf > of).mean()),"values": float(len(effects)), "share_selective": float(works.mean()), "median_target_change": float(np.median(targets)),
            "median_other_change": float(np.median(others)), "mean_target_change": float(targets.mean()),
            "mean_other_change": float(others.mean())}


# ---------------------------------------------------------------------------- claims
def _above_chance(n: dict[str, float]) -> bool:
    relations = [k.removesuffix("_probe_accuracy") for k in n if k.endswith("_probe_accuracy")]
    return all(n[f"{r}_f1"] >= 3 * n[f"{r}_chance"] for r in relations)


def _probe_beats_features(n: dict[str, float]) -> bool:
    relations = [k.removesuffix("_probe_accuracy") for k in n if k.endswith("_probe_accuracy")]
    return all(n[f"{r}_probe_f1"] - n[f"{r}_f1"] >= 0.3 for r in relations) and n["values_monosemantic"] <= 0.1 * n["values"]


def _features_summary(n: dict[str, float]) -> str:
    relations = [k.removesuffix("_probe_accuracy") for k in n if k.endswith("_probe_accuracy")]
    per = "; ".join(f"{r} P {n[f'{r}_precision']:.2f} R {n[f'{r}_recall']:.2f} F1 {n[f'{r}_f1']:.2f} (chance {n[f'{r}_chance']:.3f}, "
                    f"probe F1 {n[f'{r}_probe_f1']:.2f}, accuracy {n[f'{r}_probe_accuracy']:.2f})" for r in relations)
    return f"{per}; values with a feature of P and R ≥ 0.5: {n['values_monosemantic']:.0f} of {n['values']:.0f}"


def _chance_tolerances() -> dict:
    return {"*_chance": EXACT, "values": EXACT, "values_monosemantic": EXACT}


CLAIMS = (
    Claim(
        "reconstruction",
        "The SAE (512 TopK latents, k = 16, at the last name token after block 3) reconstructs the name activations of "
        "held-out biographies with FVU ≤ 0.2 and those of `<bos> first last` with FVU ≤ 0.3, with at most 5% of its latents dead",
        "facts_bio_sae", measure_reconstruction,
        lambda n: n["fvu"] <= 0.2 and n["name_fvu"] <= 0.3 and n["dead_share"] <= 0.05,
        lambda n: (f"held-out biographies ({n['rows']:.0f} name mentions): L0 {n['l0']:.1f}, FVU {n['fvu']:.3f}; `<bos> first "
                   f"last`: FVU {n['name_fvu']:.3f}; dead {n['dead_share']:.3f}, dense (> 10% of rows) {n['dense_share']:.3f} of "
                   f"{n['d_sae']:.0f} latents"),
        tolerances={"rows": EXACT, "d_sae": EXACT, "l0": EXACT, "name_l0": EXACT},
    ),
    Claim(
        "loss_recovered",
        "Spliced in at the name of `<bos> first last` (the profile's next token is one of the individual's 4 attributes), "
        "the reconstruction recovers ≥ 0.9 of the attribute loss that mean ablation there loses",
        "facts_bio_sae", measure_loss_recovered,
        lambda n: n["recovered"] >= 0.9,
        lambda n: (f"recovered {n['recovered']:.3f}: -log p(attribute) {n['loss_clean']:.3f} clean, {n['loss_spliced']:.3f} spliced, "
                   f"{n['loss_mean_ablated']:.3f} mean-ablated"),
        tolerances={"loss_*": RELATIVE},
    ),
    Claim(
        "features_above_chance",
        "For every attribute, the best-matching feature of each value (chosen by F1 on the even-numbered individuals, scored "
        "on the odd ones at `<bos> first last`) tracks the value at ≥ 3 × chance (mean F1 over the values ≥ 3 × the mean "
        "share of individuals holding a value)",
        "facts_bio_sae", measure_features, _above_chance, _features_summary, tolerances=_chance_tolerances(),
    ),
    Claim(
        "probe_beats_features",
        "Unlike the city or company features of SAEs on large models, no feature is an attribute value: for every attribute a "
        "linear probe on the same activations and split beats the best features' mean F1 by ≥ 0.3, and at most 10% of the "
        "values have a feature with precision and recall ≥ 0.5",
        "facts_bio_sae", measure_features, _probe_beats_features, _features_summary, tolerances=_chance_tolerances(),
    ),
    Claim(
        "feature_edit",
        "Ablating a value's best feature at the name (keeping the reconstruction error) for the odd individuals holding the "
        "value where it fires lowers log p(value) there by a median ≥ 0.6 nats, and for ≥ 80% of the values by more than "
        "the mean absolute change of the same individuals' other three attributes",
        "facts_bio_sae", measure_edits,
        lambda n: n["median_target_fired"] <= -0.6 and n["share_fired_target_beats_others"] >= 0.8,
        lambda n: (f"{n['values_fired']:.0f} of {n['values']:.0f} values' features fire on a holder; there log p(value) "
                   f"changes by a median {n['median_target_fired']:.2f} nats, the other attributes by {n['median_others_fired']:.2f} "
                   f"(absolute); target beats the others for {n['share_fired_target_beats_others']:.2f} of the values, by ≥ "
                   f"{EDIT_DROP_NATS:g} nat and twice the others for {n['share_fired_selective']:.2f}; over all holders "
                   f"(firing or not) the median change is {n['median_target_change']:.2f} vs {n['median_other_change']:.2f}"),
        tolerances={"values*": EXACT, "*_target_*": RELATIVE, "*_other*": RELATIVE, "median_target_change": RELATIVE,
                    "mean_target_change": RELATIVE, "median_target_fired": RELATIVE},
    ),
)

CARD = Card("facts-bio-sae", "facts-bio", "A sparse autoencoder at facts-bio's name", CLAIMS,
            test_file="tests/circuits/test_facts_bio_sae_card.py")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the facts-bio-sae card's SAE (TopK, at the name after block 3).")
    parser.add_argument("--train", action="store_true", help="train and save the SAE")
    parser.add_argument("--train-circuit-saes", action="store_true",
                        help=f"train and save the token SAEs at resid_post of layers {CIRCUIT_LAYERS} (feature circuits)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", default=None, help=f"output directory (default: the shipped assets/{SHIPPED})")
    args = parser.parse_args(argv)
    if not (args.train or args.train_circuit_saes):
        parser.error("nothing to do: pass --train or --train-circuit-saes")
    from interp import zoo

    torch.set_num_threads(1)
    subject = Subject(zoo.load_model("facts-bio"), name=str(zoo.model_dir("facts-bio")))
    model, world = subject.model, world_of(subject)
    if args.train_circuit_saes:
        for layer in CIRCUIT_LAYERS:
            out = Path(args.out) / f"facts-bio-L{layer}" if args.out else circuit_sae_dir(layer)
            _, _, info = train_token_sae(model, world, layer, out, seed=args.seed)
            print(json.dumps(info, indent=2))
    if args.train:
        out = Path(args.out) if args.out else shipped_dir()
        _, _, info = train(model, world, out, seed=args.seed)
        print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
