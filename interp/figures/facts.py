"""Figures of the fact-recall model ``facts-4l``: causal traces (Meng et al. 2022), severed MLPs,
probes by layer (Hewitt & Liang 2019) and the training dynamics (Zucchet et al. 2025).

The numbers come from the same measurements as the facts circuit card (`interp.circuits.facts`).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from interp import zoo
from interp.figures.base import FigureResult, register, save
from interp.figures.base import subject_of as _subject
from interp.models import HookedModel

NAME = "facts-4l"



@register
def facts_causal_trace(out_dir: str | Path | None = None, model: str | HookedModel = NAME) -> FigureResult:
    """Meng et al. 2022 Figure 1: indirect effects of restoring residual, MLP and attention states,
    for one fact and averaged over 50 facts (``<bos> first last was born in`` -> city)."""
    from interp.circuits import facts as card

    s = _subject(model)
    trace = card._trace(s)
    trace.str_tokens = [s.model.to_str_tokens(row) for row in trace.tokens]
    paths = []
    fig = trace.plot(kinds=("resid", "mlp", "attn"))
    fig.suptitle(f"{getattr(s.model, 'name', 'model')}: average indirect effect over {len(trace.tokens)} facts "
                 "(noise 3σ on the subject, 10 samples)", fontsize=11, y=1.04)
    paths += save(fig, "facts_causal_trace", out_dir)
    fig = trace.plot(prompt=0, kinds=("resid", "mlp", "attn"))
    answer = s.model.to_str_tokens(trace.answers[:1])[0]
    fig.suptitle(f"One fact: '{' '.join(trace.str_tokens[0][1:])}' -> {answer} (p clean {trace.p_clean[0]:.2f}, "
                 f"corrupted {trace.p_corrupted[0]:.2f})", fontsize=11, y=1.04)
    paths += save(fig, "facts_causal_trace_one", out_dir)
    groups = card._by_group(s)
    numbers = {f"{kind}_{g.replace(' ', '_')}_L{layer}": float(v) for kind in ("resid", "mlp", "attn")
               for g in (card.LAST_SUBJECT, card.LAST) for layer, v in enumerate(groups[kind][g])}
    return FigureResult(
        "facts_causal_trace", paths, numbers,
        "Meng et al. 2022 find the largest MLP effects at the last subject token in early-middle layers and attention "
        "effects at the last token in later layers. In facts-4l the MLP effects sit at the last token in every layer "
        f"(layer 0: {groups['mlp'][card.LAST][0]:.2f}) and at the last subject token only in layer 0 "
        f"({groups['mlp'][card.LAST_SUBJECT][0]:.2f}); attention at the last token matters in the first layers "
        f"({groups['attn'][card.LAST][0]:.2f} at layer 0, {groups['attn'][card.LAST][-1]:.2f} at the last).",
    )


@register
def facts_severed(out_dir: str | Path | None = None, model: str | HookedModel = NAME) -> FigureResult:
    """Meng et al. 2022 Figure 3: restoring the residual stream with the MLPs severed (frozen corrupted)."""
    from interp.circuits import facts as card

    s = _subject(model)
    g = card._by_group(s)
    layers = np.arange(len(g["resid"][card.LAST]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True, sharey=True)
    for ax, group in zip(axes, (card.LAST_SUBJECT, card.LAST), strict=True):
        ax.bar(layers - 0.2, g["resid"][group], width=0.4, color="tab:purple", label="residual restored")
        ax.bar(layers + 0.2, g["resid_severed_mlp"][group], width=0.4, color="tab:green", label="... with the MLPs severed")
        ax.set_xticks(layers)
        ax.set_xlabel("layer of the restored residual state")
        ax.set_title(f"restored at the {group}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("average indirect effect Δp(answer)")
    axes[0].legend(fontsize=9)
    sev = card.measure_severing(s)
    fig.suptitle(f"{getattr(s.model, 'name', 'model')}: which path carries the restored state? (50 facts)", fontsize=11)
    return FigureResult(
        "facts_severed", save(fig, "facts_severed", out_dir), sev,
        "Meng et al. 2022: severing the MLPs removes most of the effect of early residual states at the last subject token. "
        f"In facts-4l severing removes {100 * sev['last_removed']:.0f}% of the layer-0 effect at the last token and "
        f"{100 * sev['subject_removed']:.0f}% at the last subject token: the lookup runs through the last token's MLPs.",
    )


@register
def facts_probe(out_dir: str | Path | None = None, model: str | HookedModel = NAME) -> FigureResult:
    """Hewitt & Liang 2019: probe accuracy and selectivity (minus a control task) by layer."""
    from interp.circuits import facts as card
    from interp.sites import Site
    from interp.tasks import facts
    from probes import collect, control_labels, probe_sweep

    s = _subject(model)
    kb = card._kb(s)
    prompts = kb.fact_prompts(card.RELATION, template=card.TEMPLATE, seed=0)
    attributes = facts.RELATIONS[card.RELATION][0]
    labels = np.array([attributes.index(kb.facts[card.RELATION][i]) for i in range(len(kb.subjects))])
    freqs = np.bincount(labels, minlength=len(attributes)) / len(labels)
    # The control: a random city per *subject* (Hewitt & Liang's per-type labels); folds hold subjects out,
    # so a probe can only score above chance on it by reading a real city feature, never by memorising.
    control = control_labels(torch.arange(len(labels)), len(attributes), seed=1, probs=freqs)
    sites = [Site("resid_pre", 0)] + [Site("resid_post", layer) for layer in range(s.model.n_layers)]
    names = ["embed"] + [f"out {layer}" for layer in range(s.model.n_layers)]
    positions = {"last subject token": int(prompts.metadata["subject_pos"][0, -1]), "last token": prompts.clean.shape[1] - 1}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True, sharey=True)
    numbers = {}
    for ax, (where, pos) in zip(axes, positions.items(), strict=True):
        store = collect(s.model, prompts.clean, sites, positions=pos, progress=False)
        r = probe_sweep(store, labels, cv=5, control=control.numpy(), seed=0, progress=False)
        x = np.arange(len(sites))
        ax.errorbar(x, r.mean, yerr=np.abs(r.ci.T - r.mean), fmt="o-", color="tab:blue", capsize=3, label="city (task)")
        ax.plot(x, r.control_scores.mean(1), "s--", color="tab:gray", label="random city per subject (control)")
        ax.plot(x, r.selectivity.mean(1), "^-", color="tab:red", label="selectivity = task − control")
        ax.axhline(r.chance, ls=":", color="k", lw=0.8, label=f"chance (majority class) {r.chance:.2f}")
        ax.set_xticks(x, names)
        ax.set_xlabel("residual stream after")
        ax.set_title(f"at the {where}")
        ax.grid(alpha=0.3)
        key = where.replace(" ", "_")
        numbers |= {f"{key}_{n}": float(v) for n, v in zip(names, r.mean, strict=True)}
        numbers |= {f"{key}_{n}_selectivity": float(v) for n, v in zip(names, r.selectivity.mean(1), strict=True)}
    axes[0].set_ylabel("5-fold accuracy (held-out subjects)")
    axes[0].set_ylim(-0.1, 1.05)
    axes[1].legend(fontsize=8, loc="center right")
    fig.suptitle(f"{getattr(s.model, 'name', 'model')}: where is the city linearly decodable? (300 subjects, 20 cities)", fontsize=11)
    return FigureResult(
        "facts_probe", save(fig, "facts_probe", out_dir), numbers,
        "Hewitt & Liang 2019: a probe is informative only if it beats a control task. The city of a held-out subject "
        "is decodable at the last token after layer 1 and partly at the last subject token after layer 0; the control "
        "stays at chance, so the selectivity is the accuracy gain.",
    )


@register
def facts_dynamics(out_dir: str | Path | None = None, model: str = NAME) -> FigureResult:
    """Zucchet et al. 2025: loss and recall over training, and the attention to the subject forming."""
    from interp.circuits import facts as card
    from interp.heads import attention_patterns
    from interp.tasks import facts

    folder = zoo.model_dir(model)
    history = json.loads((folder / "history.json").read_text())["history"]
    kb = facts.KnowledgeBase.build(seed=0)
    baseline = card.no_knowledge_loss(kb)
    steps = np.array([h["step"] for h in history])
    prompts = kb.fact_prompts(card.RELATION, template=card.TEMPLATE, seed=0)
    subject_last = int(prompts.metadata["subject_pos"][0, -1])
    ckpts = zoo.checkpoint_steps(model)
    attention = []
    for step in tqdm(ckpts, desc="facts checkpoints", leave=False):
        m = zoo.load_model(model, step=step)
        with torch.no_grad():
            pattern = attention_patterns(m, prompts.clean)[:, :, :, -1, subject_last].mean(-1)  # [layer head]
        attention.append(pattern[0].max().item())
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    x = np.maximum(steps, 1)
    ax_l.plot(x, [h["answer_loss"] for h in history], color="tab:blue", label="answer loss (nats)")
    ax_l.axhline(baseline, ls="--", color="tab:blue", lw=0.8, label=f"no-knowledge loss {baseline:.2f}")
    ax_l.set_xscale("log")
    ax_l.set_xlabel("training step (log; step 0 drawn at 1)")
    ax_l.set_ylabel("answer loss (nats)")
    twin = ax_l.twinx()
    twin.plot(x, [h["recall"] for h in history], color="tab:red", label="recall (top-1)")
    twin.set_ylabel("recall of all 3,600 facts")
    twin.set_ylim(0, 1.02)
    lines = ax_l.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax_l.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="center left")
    ax_l.set_title("loss and recall")
    ax_a.plot(np.maximum(ckpts, 1), attention, "o-", color="tab:green")
    ax_a.set_xscale("log")
    ax_a.set_ylim(0, 1.02)
    ax_a.set_xlabel("training step (log; step 0 drawn at 1)")
    ax_a.set_ylabel("attention weight")
    ax_a.set_title("best layer-0 head: last token → last subject token")
    ax_a.grid(alpha=0.3)
    fig.suptitle(f"{model}: learning 3,600 facts (no plateau at this size and learning rate)", fontsize=11)
    dyn = card.plateau_numbers(history, baseline)
    return FigureResult(
        "facts_dynamics", save(fig, "facts_dynamics", out_dir), {**dyn, "final_attention": attention[-1]},
        "Zucchet et al. 2025 report a plateau, while attention to the subject forms, before facts are recalled. "
        f"facts-4l shows none: its answer loss passes the no-knowledge level ({baseline:.2f} nats) within "
        f"{dyn['plateau_steps']:.0f} steps and recall reaches 0.5 at step {dyn['recall_half_step']:.0f}.",
    )


# ---------------------------------------------------------------------------- Zhang & Nanda 2023

CORRUPTIONS = ("Gaussian noise (3σ) on the subject", "symmetric token replacement (another subject)")
METRICS = ("p(answer)", "logit difference")


@torch.no_grad()
def restoration_grid(model: HookedModel, prompts, corruption: str, noise: float = 3.0, samples: int = 10,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Normalised effect of restoring the clean ``resid_post`` of each layer × position in a corrupted run.

    ``corruption``: "noise" (Gaussian noise of ``noise`` × the token-embedding std on the subject
    tokens, ``samples`` draws, as in ROME) or "replace" (the prompt of another subject with a
    different answer: symmetric token replacement). Metrics at the last position: p(answer) and the
    logit difference answer − the other subject's answer (``prompts.wrong``). Each grid is
    ``mean(m_restored − m_corrupted) / mean(m_clean − m_corrupted)`` over prompts: 0 = nothing
    restored, 1 = the clean run. Returns ``{"p(answer)": [layer pos], "logit difference": [layer pos]}``.
    """
    from interp.sites import Site
    from patching.causal_tracing import embedding_std

    tokens, answers, wrong = prompts.clean, prompts.answers, prompts.wrong
    n, n_pos = tokens.shape
    sites = [Site("resid_post", layer) for layer in range(model.n_layers)]
    clean_logits, clean = model.run(tokens, reads=sites)
    if corruption == "noise":
        S = samples
        gen = torch.Generator().manual_seed(seed)
        noise_full = torch.zeros(n * S, n_pos, model.d_model)
        subject = prompts.metadata["subject_pos"]
        eps = torch.randn(n * S, subject.shape[1], model.d_model, generator=gen) * noise * embedding_std(model)
        noise_full[torch.arange(n * S)[:, None], subject.repeat_interleave(S, 0)] = eps
        base = tokens.repeat_interleave(S, 0)
        edits = [(Site("embed"), lambda act: act + noise_full.to(act.dtype))]
    elif corruption == "replace":
        S, base, edits = 1, prompts.corrupted, []
    else:
        raise ValueError(f"corruption must be 'noise' or 'replace', got {corruption!r}")

    def metrics(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        last = logits[:, -1].float().reshape(n, S, -1)
        p = last.softmax(-1).gather(-1, answers[:, None, None].expand(n, S, 1))[..., 0].mean(1)
        ld = (last.gather(-1, answers[:, None, None].expand(n, S, 1)) - last.gather(-1, wrong[:, None, None].expand(n, S, 1)))[..., 0].mean(1)
        return p, ld

    p_clean, ld_clean = metrics(clean_logits.repeat_interleave(S, 0))
    corr_logits, _ = model.run(base, edits=edits)
    p_corr, ld_corr = metrics(corr_logits)
    out = {m: np.zeros((model.n_layers, n_pos)) for m in METRICS}
    for layer, site in enumerate(sites):
        value = clean[site].repeat_interleave(S, 0)
        for pos in range(n_pos):
            def restore(act, pos=pos, value=value):
                act = act.clone()
                act[:, pos] = value[:, pos].to(act.dtype)
                return act
            logits, _ = model.run(base, edits=[*edits, (site, restore)])
            p, ld = metrics(logits)
            out[METRICS[0]][layer, pos] = float((p - p_corr).mean() / (p_clean - p_corr).mean())
            out[METRICS[1]][layer, pos] = float((ld - ld_corr).mean() / (ld_clean - ld_corr).mean())
    return out


@register
def facts_corruption_metrics(out_dir: str | Path | None = None, model: str | HookedModel = NAME) -> FigureResult:
    """Zhang & Nanda 2023: Gaussian noise vs symmetric token replacement, and probability vs logit
    difference, for the same restoration sweep on the same 50 facts."""
    from interp.circuits import facts as card

    s = _subject(model)
    prompts = card._kb(s).fact_prompts(card.RELATION, template=card.TEMPLATE, subjects=card.TRACE_SUBJECTS, seed=0)
    grids = {c: restoration_grid(s.model, prompts, c) for c in tqdm(("noise", "replace"), desc="corruptions", leave=False)}
    labels = s.model.to_str_tokens(prompts.clean[0])
    subject = prompts.metadata["subject_pos"][0].tolist()
    labels = [f"{t}*" if i in subject else t for i, t in enumerate(labels)]
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), constrained_layout=True, sharex=True, sharey=True)
    for row, (corruption, title) in enumerate(zip(("noise", "replace"), CORRUPTIONS, strict=True)):
        for col, metric in enumerate(METRICS):
            ax = axes[row, col]
            grid = grids[corruption][metric]
            im = ax.imshow(grid, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
            for (i, j), v in np.ndenumerate(grid):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
            ax.set_title(f"{title}\nmetric: {metric}", fontsize=9)
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
            ax.set_yticks(range(s.model.n_layers))
            if col == 0:
                ax.set_ylabel("layer (resid_post restored)")
    fig.colorbar(im, ax=axes, shrink=0.6, label="restored share (0 corrupted, 1 clean)")
    fig.suptitle(f"{getattr(s.model, 'name', 'model')}: the same restoration sweep under two corruptions and two metrics "
                 f"(50 facts; * = subject token)", fontsize=11)
    last_subject, last = subject[-1], len(labels) - 1
    numbers = {}
    for corruption in ("noise", "replace"):
        for metric, short in zip(METRICS, ("prob", "logit_diff"), strict=True):
            g = grids[corruption][metric]
            numbers[f"{corruption}_{short}_last_subject_L0"] = float(g[0, last_subject])
            numbers[f"{corruption}_{short}_last_token_L0"] = float(g[0, last])
            numbers[f"{corruption}_{short}_last_subject_L1"] = float(g[1, last_subject]) if g.shape[0] > 1 else float("nan")
    gap = max(abs(grids["noise"][m] - grids["replace"][m]).max() for m in METRICS)
    where = np.unravel_index(np.argmax(abs(grids["noise"][METRICS[0]] - grids["replace"][METRICS[0]])), grids["noise"][METRICS[0]].shape)
    caption = (
        "Zhang & Nanda 2023 show that the corruption (Gaussian noise vs symmetric token replacement) and the metric "
        "(probability vs logit difference) can change what activation patching localises, and recommend STR with logit "
        f"difference. On facts-4l the largest disagreement between the corruptions is {gap:.2f} of the clean effect "
        f"(p(answer), layer {where[0]}, token '{labels[where[1]]}'). Restoring the last subject token after layer 0: "
        f"noise {numbers['noise_prob_last_subject_L0']:.2f} (prob) / {numbers['noise_logit_diff_last_subject_L0']:.2f} (logit diff), "
        f"replacement {numbers['replace_prob_last_subject_L0']:.2f} / {numbers['replace_logit_diff_last_subject_L0']:.2f}; "
        f"the last token after layer 0: noise {numbers['noise_prob_last_token_L0']:.2f} / {numbers['noise_logit_diff_last_token_L0']:.2f}, "
        f"replacement {numbers['replace_prob_last_token_L0']:.2f} / {numbers['replace_logit_diff_last_token_L0']:.2f}. "
        + ("As Zhang & Nanda found, Gaussian noise credits the subject token with more than token replacement does"
           if numbers["noise_prob_last_subject_L0"] > numbers["replace_logit_diff_last_subject_L0"] + 0.05
           else "Unlike Zhang & Nanda's models, the two corruptions credit the subject token alike")
        + ("; under replacement, the probability metric shows less of the subject token's effect than the logit difference."
           if numbers["replace_prob_last_subject_L0"] + 0.05 < numbers["replace_logit_diff_last_subject_L0"]
           else "; the two metrics agree under replacement.")
    )
    return FigureResult("facts_corruption_metrics", save(fig, "facts_corruption_metrics", out_dir), numbers, caption)
