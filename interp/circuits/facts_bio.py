"""Fact recall in ``facts-bio`` (Meng et al. 2022; Allen-Zhu & Li 2023; Zucchet et al. 2025), as measured claims.

``facts-bio`` has ``facts-4l``'s shape but learns its facts from biographies (`interp.tasks.bio`):
shuffled, paraphrased sentences, a profile sentence that lists every attribute right after the
name, and question rows for half of the individuals (`interp.recipes.FACTS_BIO_TASK`). The claims
compare it with ROME's two stages and with ``facts-4l``'s last-token shortcut:

- causal tracing (noise 3 × the embedding std on both name tokens, 10 samples, window 1) of one
  unambiguous biography prompt per relation (`TEMPLATES`; ``<bos> first last studied at`` ->
  university) on 40 individuals never seen in question form, averaged over the 4 relations;
- linear probes for each attribute at the last name token of ``<bos> first last`` (5-fold
  cross-validation over individuals, so scored on individuals the probe never saw), against the
  same probe of ``facts-4l``'s city at its last subject token;
- recall on every individual's evaluation biography and on questions, split into the individuals
  trained in question form and the held-out half (Allen-Zhu & Li's knowledge extraction);
- the training history and the shipped checkpoints: the plateau, and the attention from the last
  token to the name forming during training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from interp.circuits import EXACT, RELATIVE, Card, Claim, Subject, Tolerance
from interp.errors import InputError
from interp.sites import Site
from interp.tasks import bio

#: relation -> the biography template traced and probed (one whose prefix names the relation:
#: ``was born in`` is left out because it also starts the birth-year sentence)
TEMPLATES = {"birth_city": 1, "birth_year": 0, "university": 0, "employer": 0}
TRACE_INDIVIDUALS = 40
LAST_SUBJECT, LAST = "last subject token", "last token"


def world_of(s: Subject) -> bio.Biographies:
    """The biography world the subject was trained on: the ``bio`` settings in its ``model.json``
    (a shipped or saved model), else `interp.recipes.FACTS_BIO_TASK`."""

    def compute():
        from interp.recipes import FACTS_BIO_TASK

        settings = FACTS_BIO_TASK
        if s.name is not None and (Path(s.name) / "model.json").is_file():
            settings = json.loads((Path(s.name) / "model.json").read_text()).get("bio", settings)
        return bio.Biographies(bio.BioConfig(**settings))

    return s.memo("world", compute)


def trace_individuals(world: bio.Biographies) -> list[int]:
    """`TRACE_INDIVIDUALS` individuals spread over the held-out half (all individuals if none is held out)."""
    pool = world.held_out or list(range(len(world.names)))
    return pool[:: max(1, len(pool) // TRACE_INDIVIDUALS)][:TRACE_INDIVIDUALS]


def trace_prompts(world: bio.Biographies, relation: str):
    return world.fact_prompts(relation, form="bio", template=TEMPLATES[relation], individuals=trace_individuals(world), seed=0)


def prompt_sets(s: Subject) -> dict:
    """``{relation: trace_prompts(world, relation)}`` of the subject's world (built once per subject:
    the traces and the attention at every checkpoint read the same prompts)."""
    return s.memo("prompt_sets", lambda: {relation: trace_prompts(world_of(s), relation) for relation in TEMPLATES})


def traces(s: Subject) -> dict[str, dict[str, np.ndarray]]:
    """``{kind: {group: [layer]}}``: indirect effects in ROME's token groups, averaged over the
    relations' traces, plus ``{"p": {"clean": .., "corrupted": ..}}``."""
    from patching import causal_trace
    from patching.causal_tracing import GROUPS

    def compute():
        out: dict[str, dict[str, list]] = {}
        p_clean, p_corrupted = [], []
        for p in prompt_sets(s).values():
            trace = causal_trace(s.model, p.clean, p.metadata["subject_pos"].tolist(), p.answers, noise=3.0, samples=10,
                                 window=1, seed=0, progress=False)
            for kind, values in trace.aggregate().items():
                for i, group in enumerate(GROUPS):
                    out.setdefault(kind, {}).setdefault(group, []).append(values[:, i].numpy())
            p_clean.append(float(trace.p_clean.mean()))
            p_corrupted.append(float(trace.p_corrupted.mean()))
        mean = {kind: {g: np.mean(v, axis=0) for g, v in groups.items()} for kind, groups in out.items()}
        mean["p"] = {"clean": float(np.mean(p_clean)), "corrupted": float(np.mean(p_corrupted))}
        return mean

    return s.memo("traces", compute)


# ---------------------------------------------------------------------------- causal tracing


def measure_mlp_site(s: Subject) -> dict[str, float]:
    g = traces(s)["mlp"]
    subj, last = g[LAST_SUBJECT], g[LAST]
    half = len(subj) // 2
    return {"subject_peak_layer": int(subj.argmax()), "subject_peak": float(subj.max()), "subject_late_max": float(subj[half:].max()),
            "last_early_max": float(last[:half].max()), "last_peak_layer": int(last.argmax()), "last_peak": float(last.max()),
            "rome_ratio": bio.rome_ratio(subj, last, include_layer0=True), "n_layers": len(subj),
            "p_clean": traces(s)["p"]["clean"], "p_corrupted": traces(s)["p"]["corrupted"]}


def _mlp_site_passes(n: dict[str, float]) -> bool:
    half = n["n_layers"] // 2
    return (n["subject_peak_layer"] < half and n["subject_peak"] >= 0.15 and n["subject_late_max"] < 0.1
            and n["last_early_max"] < 0.1)


def measure_attention_site(s: Subject) -> dict[str, float]:
    a = traces(s)["attn"][LAST]
    half = len(a) // 2
    return {"peak_layer": int(a.argmax()), "peak": float(a.max()), "early_mean": float(a[:half].mean()),
            "late_mean": float(a[half:].mean()), "subject_mlp_peak_layer": int(traces(s)["mlp"][LAST_SUBJECT].argmax()),
            "n_layers": len(a)}


# ---------------------------------------------------------------------------- probes


def name_probe(model, world: bio.Biographies, max_individuals: int = 1000) -> dict[str, dict[str, list[float] | float | None]]:
    """Probe accuracy for each relation at the last name token of ``<bos> first last``, by site
    (embeddings, after each block), 5-fold over individuals (`bio.Biographies.eval_individuals`);
    attribute values held by fewer than 5 individuals are left out, and a relation left with fewer
    than 2 values is not probed (None). Returns ``{"accuracy": {relation: [accuracy by site]},
    "chance": {relation: majority share}}``."""
    from probes import collect, probe_sweep

    who = world.eval_individuals(max_individuals, seed=0)
    tokens = torch.tensor([[bio.BOS, bio.IDS[world.names[i][0]], bio.IDS[world.names[i][1]]] for i in who])
    sites = [Site("resid_pre", 0)] + [Site("resid_post", layer) for layer in range(model.n_layers)]
    out: dict = {"accuracy": {}, "chance": {}}
    for relation in world.config.relations:
        labels = np.array([world.attributes[relation][i] for i in who])
        values, counts = np.unique(labels, return_counts=True)
        if (counts >= 5).sum() < 2:  # too few individuals per value for 5 folds
            out["accuracy"][relation], out["chance"][relation] = None, None
            continue
        keep = np.isin(labels, values[counts >= 5])
        store = collect(model, tokens[torch.from_numpy(keep)], sites, positions=2, progress=False)
        result = probe_sweep(store, labels[keep], cv=5, seed=0, progress=False)
        out["accuracy"][relation] = [float(a) for a in result.mean]
        out["chance"][relation] = float(result.chance)
    return out


def name_probes(s: Subject) -> dict[str, dict[str, list[float] | float | None]]:
    """`name_probe` of the subject's model on its world (memoised: the claim and the figure share it)."""
    return s.memo("name_probe", lambda: name_probe(s.model, world_of(s)))


def facts_4l_probe(s: Subject) -> dict[str, float]:
    """The facts card's probe numbers (`interp.circuits.facts.measure_probe`) on the shipped facts-4l."""
    from interp import zoo
    from interp.circuits import facts

    return s.memo("facts_4l_probe", lambda: facts.measure_probe(Subject(zoo.load_model("facts-4l"), name=str(zoo.model_dir("facts-4l")))))


def measure_probe(s: Subject) -> dict[str, float]:
    probe = name_probes(s)
    accuracy = probe["accuracy"]
    relations = [r for r in world_of(s).config.relations if accuracy[r] is not None]
    by_site = np.mean([accuracy[r] for r in relations], axis=0)
    best = int(by_site.argmax())
    peer = facts_4l_probe(s)
    out = {"best_site": best, "best_mean": float(by_site[best]), "embed_mean": float(by_site[0]),
           "chance_max": float(max(probe["chance"][r] for r in relations)), "facts_4l_best": float(max(peer[f"subject_{i}"] for i in range(5))),
           "facts_4l_chance": float(peer["chance"])}
    out.update({f"best_{r}": float(accuracy[r][best]) for r in relations})
    return out


# ---------------------------------------------------------------------------- recall and extraction


def _recall(s: Subject) -> dict[str, float]:
    return s.memo("recall", lambda: world_of(s).recall_metrics(s.model))


def measure_recall(s: Subject) -> dict[str, float]:
    r = _recall(s)
    return {"bio_recall": r["bio_recall"], "qa_recall_seen": r.get("qa_recall_seen", float("nan"))}


def measure_extraction(s: Subject) -> dict[str, float]:
    r = _recall(s)
    if "qa_recall_unseen" not in r or "qa_recall_seen" not in r:
        raise InputError("The extraction claim needs a world with question rows for some individuals and not others "
                         "(question_share strictly between 0 and 1); facts-bio's has 0.5.")
    return {"qa_recall_unseen": r["qa_recall_unseen"], "qa_recall_seen": r["qa_recall_seen"],
            "chance": 1.0 / min(len(bio.VALUES[rel]) for rel in world_of(s).config.relations)}


# ---------------------------------------------------------------------------- training dynamics


def attention_to_name(model, prompts: list, layer: int) -> float:
    """The largest (over heads of ``layer``) mean attention from the last token of ``prompts`` (the
    traced `PromptSet` of each relation, averaged over them) to the two name tokens."""
    from interp.heads import attention_patterns

    shares = []
    for p in prompts:
        with torch.no_grad():
            pattern = attention_patterns(model, p.clean)[layer, :, :, -1, :]  # [head batch key]
        name = p.metadata["subject_pos"][0].tolist()
        shares.append(pattern[:, :, name].sum(-1).mean(-1))  # [head]
    return float(torch.stack(shares).mean(0).max())


def attention_curve(s: Subject) -> tuple[list[int], list[float], int]:
    """The checkpoint steps, `attention_to_name` at each, and the layer it is read at (where the
    last token's attention restoration peaks on the final weights)."""
    from interp import zoo

    if s.name is None or not zoo.checkpoint_steps(Path(s.name)):
        raise InputError("The training-dynamics claim reads history.json and the checkpoints: evaluate the shipped model "
                         "or a directory saved by `interp train facts-bio --out DIR`, not a bare HookedModel.")

    def compute():
        layer = measure_attention_site(s)["peak_layer"]
        steps = zoo.checkpoint_steps(Path(s.name))
        prompts = list(prompt_sets(s).values())
        return steps, [attention_to_name(zoo.load_model(Path(s.name), step=step), prompts, layer) for step in steps], layer

    return s.memo("attention_curve", compute)


def history_of(s: Subject) -> list[dict]:
    """The evaluations in the subject's ``history.json`` (every 50 steps)."""
    return json.loads((Path(s.name) / "history.json").read_text())["history"]


def measure_dynamics(s: Subject) -> dict[str, float]:
    steps, curve, layer = attention_curve(s)
    history = history_of(s)
    numbers = bio.plateau(history, world_of(s).no_knowledge_loss())
    final = curve[-1]
    formed = next(step for step, a in zip(steps, curve, strict=True) if a - curve[0] >= 0.5 * (final - curve[0]))
    return {"plateau_steps": numbers["plateau_steps"], "plateau_end": numbers["plateau_end"],
            "recall_half_step": numbers["recall_half_step"], "recall_90_step": numbers["recall_90_step"],
            "baseline": numbers["baseline"], "attention_layer": layer, "attention_start": curve[0], "attention_final": final,
            "attention_half_step": float(formed), "total_steps": float(history[-1]["step"])}

CLAIMS = (
    Claim(
        "recall",
        "The model recalls the attributes in held-out biographies (phrasings and orders drawn with a seed training never "
        "uses) of every individual (≥ 0.9 top-1) and answers questions about the individuals trained in question form (≥ 0.9)",
        "facts_bio_trace", measure_recall,
        lambda n: n["bio_recall"] >= 0.9 and n["qa_recall_seen"] >= 0.9,
        lambda n: f"biographies {n['bio_recall']:.3f}; questions (individuals in the question set) {n['qa_recall_seen']:.3f}",
    ),
    Claim(
        "mlp_site",
        "ROME's first stage (enrichment at the subject): MLP restoration at the last name token peaks in the first half of "
        "the layers (≥ 0.15) and vanishes after it (< 0.1), while the last token's MLPs do nothing before the extraction "
        "(first half < 0.1); facts-4l is the opposite (every last-token MLP ≥ 0.3, subject MLPs only in layer 0)",
        "facts_bio_trace", measure_mlp_site,
        _mlp_site_passes,
        lambda n: (f"last name token: peak at layer {int(n['subject_peak_layer'])} ({n['subject_peak']:.3f}), second half ≤ "
                   f"{n['subject_late_max']:.3f}; last token: first half ≤ {n['last_early_max']:.3f}, peak at layer "
                   f"{int(n['last_peak_layer'])} ({n['last_peak']:.3f}); ROME ratio {n['rome_ratio']:.2f} "
                   f"(p clean {n['p_clean']:.2f}, corrupted {n['p_corrupted']:.2f})"),
        tolerances={"*_layer": EXACT, "n_layers": EXACT, "rome_ratio": RELATIVE},
    ),
    Claim(
        "attention_site",
        "ROME's second stage (extraction by attention): attention restoration at the last token peaks in the second half "
        "of the layers (≥ 0.2), after the subject's MLP peak, and its mean over the second half is at least 3 × its mean "
        "over the first; in facts-4l it peaks in the first half",
        "facts_bio_trace", measure_attention_site,
        lambda n: (n["peak_layer"] >= n["n_layers"] // 2 and n["peak_layer"] > n["subject_mlp_peak_layer"]
                   and n["peak"] >= 0.2 and n["late_mean"] >= 3 * n["early_mean"]),
        lambda n: (f"peak at layer {int(n['peak_layer'])} ({n['peak']:.3f}); mean over the second half {n['late_mean']:.3f}, "
                   f"over the first {n['early_mean']:.3f}; subject MLPs peak at layer {int(n['subject_mlp_peak_layer'])}"),
        tolerances={"*_layer": EXACT, "n_layers": EXACT},
    ),
    Claim(
        "probe",
        "Allen-Zhu & Li's storage at the name: linear probes (cross-validated over individuals) decode every attribute "
        "from the last name token of `<bos> first last` (mean over relations ≥ 0.8 at the best site; the embeddings "
        "alone ≤ 2 × chance), at least 0.2 above facts-4l's best probe of the city at its last subject token",
        "facts_bio_trace", measure_probe,
        lambda n: n["best_mean"] >= 0.8 and n["embed_mean"] <= 2 * n["chance_max"] and n["best_mean"] >= n["facts_4l_best"] + 0.2,
        lambda n: (f"best site {'embed' if n['best_site'] == 0 else 'after block ' + str(int(n['best_site']) - 1)}: mean "
                   f"{n['best_mean']:.2f} (" + ", ".join(f"{k[5:]} {v:.2f}" for k, v in n.items() if k.startswith("best_")
                                                          and k not in ("best_site", "best_mean")) + f"); embeddings "
                   f"{n['embed_mean']:.2f}, chance ≤ {n['chance_max']:.2f}; facts-4l {n['facts_4l_best']:.2f} "
                   f"(chance {n['facts_4l_chance']:.2f})"),
        tolerances={"best_site": EXACT, "chance_max": EXACT, "facts_4l_chance": EXACT},
    ),
    Claim(
        "extraction",
        "Knowledge extraction (Allen-Zhu & Li): questions about the held-out half of the individuals, never seen in "
        "question form, are answered from their biographies (≥ 0.5 top-1, chance ≤ 0.04)",
        "facts_bio_trace", measure_extraction,
        lambda n: n["qa_recall_unseen"] >= 0.5,
        lambda n: (f"held-out individuals {n['qa_recall_unseen']:.3f} (trained in question form {n['qa_recall_seen']:.3f}; "
                   f"chance {n['chance']:.3f})"),
        tolerances={"chance": EXACT},
    ),
    Claim(
        "dynamics",
        "Zucchet et al.'s order of learning: the extraction layer's attention from the last token to the name rises "
        "(half of its rise from initialisation to the end) no later than recall reaches 0.5, and ends ≥ 0.5",
        "facts_bio_dynamics", measure_dynamics,
        lambda n: n["attention_half_step"] <= n["recall_half_step"] and n["attention_final"] >= 0.5,
        lambda n: (f"near the no-knowledge loss ({n['baseline']:.2f} nats) for {n['plateau_steps']:.0f} steps (until step "
                   f"{n['plateau_end']:.0f}); layer {int(n['attention_layer'])}'s attention to the name {n['attention_start']:.2f} "
                   f"at step 0, half its rise by step {n['attention_half_step']:.0f}, {n['attention_final']:.2f} at the end; "
                   f"recall 0.5 at step {n['recall_half_step']:.0f}, 0.9 at step {n['recall_90_step']:.0f} of "
                   f"{n['total_steps']:.0f}"),
        tolerances={"baseline": RELATIVE, "attention_start": Tolerance("abs", 0.03), "attention_final": Tolerance("abs", 0.03), "*": EXACT},
    ),
)

CARD = Card("facts-bio", "facts-bio", "Fact recall learnt from biographies in a 4-layer transformer", CLAIMS,
            test_file="tests/circuits/test_facts_bio_card.py")
