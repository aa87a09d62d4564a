"""DAS against pyvene 0.1.8, measured in the same run on the same model, site and data.

    python -m benchmarks.das                 # fine-tune a tiny GPT-2, then train DAS with both libraries
    python -m benchmarks.das --k 8 --epochs 10   # an easier setting: every method reaches IIA 1.0

The model: a Hugging Face ``GPT2LMHeadModel`` (2 layers, d_model 64, seeded) fine-tuned here for a
few hundred steps on a copy task, ``[BOS, X, f, f, f, SEP] -> X``: the answer at the last position
is the token at position 1, one of ``N_VALUES`` value tokens; ``f`` are random filler tokens. So the
high-level causal variable "the token at position 1" exists, and its counterfactual label on a
(base, source) pair is the source's token. It is saved with ``save_pretrained`` in a temporary
directory; ours loads it with ``interp.load(dir, backend="nnsight")`` and pyvene wraps the same
``GPT2LMHeadModel`` in a ``pv.IntervenableModel`` with a ``LowRankRotatedSpaceIntervention``.

The site: the residual stream at position 1 entering layer ``--layer`` (ours
``Site("resid_pre", layer, pos=1)``; pyvene ``component="block_input"``, ``unit="pos"``, location 1).
Before DAS, the full-vector interchange at that site is checked to move the answer to the source's
token (its IIA is printed). Both trainings use the same train/test pairs, the same number of
epochs, batch size, learning rate (Adam) and batch order, cross-entropy at the last position
against the counterfactual label; the score is the held-out IIA (argmax == counterfactual label).
Wall times cover training + held-out evaluation; the model is frozen in both.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
import torch.nn.functional as F

BOS, SEP = 0, 1
N_VALUES = 16
FIRST_VALUE = 2
FIRST_FILLER = FIRST_VALUE + N_VALUES
N_FILLERS = 30
VOCAB = FIRST_FILLER + N_FILLERS
SEQ = 6  # BOS X f f f SEP


def sample(rng: np.random.Generator) -> tuple[list[int], int]:
    x = int(rng.integers(FIRST_VALUE, FIRST_VALUE + N_VALUES))
    fillers = rng.integers(FIRST_FILLER, VOCAB, size=3).tolist()
    return [BOS, x, *fillers, SEP], x


def build_and_finetune(out_dir: str, steps: int, seed: int) -> tuple[float, float]:
    """Tiny seeded GPT-2 trained on the copy task; saved to ``out_dir``. Returns (accuracy, seconds)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=64, n_layer=2, n_head=4,
                     bos_token_id=BOS, eos_token_id=SEP, attn_implementation="eager")
    model = GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        rows = [sample(rng) for _ in range(64)]
        tokens = torch.tensor([r[0] for r in rows])
        answers = torch.tensor([r[1] for r in rows])
        loss = F.cross_entropy(model(tokens).logits[:, -1], answers)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    rng_eval = np.random.default_rng(seed + 99)
    rows = [sample(rng_eval) for _ in range(512)]
    with torch.no_grad():
        pred = model(torch.tensor([r[0] for r in rows])).logits[:, -1].argmax(-1)
    acc = float((pred == torch.tensor([r[1] for r in rows])).float().mean())
    model.save_pretrained(out_dir)
    return acc, time.perf_counter() - start


def make_data(n_train: int, n_test: int, seed: int):
    from patching.das import counterfactual_dataset

    data = counterfactual_dataset(sample, lambda base_x, source_x: source_x, n_train + n_test, seed=seed,
                                  require_change=True, d_vocab=VOCAB)
    return data[list(range(n_train))], data[list(range(n_train, n_train + n_test))]


def batch_order(n: int, epochs: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """The batch order ``train_das`` uses (same generator, same calls)."""
    gen = torch.Generator().manual_seed(seed)
    return [idx for _ in range(epochs) for idx in torch.randperm(n, generator=gen).split(batch_size)]


def run_ours(model_dir: str, layer: int, train, test, k: int, epochs: int, lr: float, batch_size: int, seed: int):
    import interp
    from interp import Site
    from patching.das import train_das
    from patching.interchange import interchange

    model = interp.load(model_dir, backend="nnsight")
    site = Site("resid_pre", layer, pos=1)
    with torch.no_grad():
        full = interchange(model, test.base, test.source, site)[:, -1].argmax(-1)
    full_iia = float((full == test.labels).float().mean())
    start = time.perf_counter()
    result = train_das(model, site, train, k=k, eval_dataset=test, epochs=epochs, lr=lr,
                       batch_size=batch_size, seed=seed, progress=False)
    return result.iia, time.perf_counter() - start, full_iia, result.losses


def run_pyvene(model_dir: str, layer: int, train, test, k: int, epochs: int, lr: float, batch_size: int, seed: int):
    import pyvene as pv
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(model_dir, local_files_only=True, attn_implementation="eager").eval()
    torch.manual_seed(seed)
    config = pv.IntervenableConfig(
        representations=[pv.RepresentationConfig(layer, "block_input", "pos", 1, low_rank_dimension=k)],
        intervention_types=pv.LowRankRotatedSpaceIntervention,
    )
    iv = pv.IntervenableModel(config, hf)
    iv.set_device("cpu")
    iv.disable_model_gradients()
    params = [p for p in iv.get_trainable_parameters()]
    opt = torch.optim.Adam(params, lr=lr)

    def forward(base, source):
        where = [[[1]] * base.shape[0]]
        _, out = iv({"input_ids": base}, [{"input_ids": source}], unit_locations={"sources->base": (where, where)})
        return out.logits[:, -1]

    start = time.perf_counter()
    losses = []
    iv.train()
    for idx in batch_order(len(train), epochs, batch_size, seed):
        loss = F.cross_entropy(forward(train.base[idx], train.source[idx]), train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    iv.eval()
    hits = []
    with torch.no_grad():
        for s in range(0, len(test), 256):
            pred = forward(test.base[s:s + 256], test.source[s:s + 256]).argmax(-1)
            hits.append(pred == test.labels[s:s + 256])
    iia = float(torch.cat(hits).float().mean())
    return iia, time.perf_counter() - start, losses


def run_plain(model_dir: str, layer: int, train, test, k: int, epochs: int, lr: float, batch_size: int, seed: int):
    """Independent reference: plain torch orthogonal [d k] rotation + interchange via a forward pre-hook."""
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(model_dir, local_files_only=True, attn_implementation="eager").eval()
    for p in hf.parameters():
        p.requires_grad_(False)
    torch.manual_seed(seed)
    d = hf.config.n_embd
    rot = torch.nn.utils.parametrizations.orthogonal(torch.nn.Linear(d, k, bias=False))
    block = hf.transformer.h[layer]
    store = {}

    def hook(module, args):
        h = args[0]
        if "source" in store:
            R = rot.weight  # [k d], orthonormal rows
            src = store["source"]
            h = h.clone()
            h[:, 1] = h[:, 1] + ((src - h[:, 1]) @ R.T) @ R
            return (h, *args[1:])
        store["capture"] = h[:, 1].detach()
        return None

    handle = block.register_forward_pre_hook(hook)

    def forward(base, source):
        store.pop("source", None)
        with torch.no_grad():
            hf(source)
        store["source"] = store.pop("capture")
        out = hf(base).logits[:, -1]
        store.pop("source")
        return out

    opt = torch.optim.Adam(rot.parameters(), lr=lr)
    start = time.perf_counter()
    try:
        for idx in batch_order(len(train), epochs, batch_size, seed):
            loss = F.cross_entropy(forward(train.base[idx], train.source[idx]), train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pred = forward(test.base, test.source).argmax(-1)
        iia = float((pred == test.labels).float().mean())
    finally:
        handle.remove()
    return iia, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=0, help="resid_pre of this layer (pyvene block_input) at position 1")
    parser.add_argument("--k", type=int, default=4, help="subspace dimension (pyvene low_rank_dimension)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=1024)
    parser.add_argument("--n-test", type=int, default=256)
    parser.add_argument("--finetune-steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()

    with tempfile.TemporaryDirectory() as model_dir:
        acc, t_ft = build_and_finetune(model_dir, args.finetune_steps, args.seed)
        print(f"tiny GPT-2 fine-tuned on the copy task: {args.finetune_steps} steps, {t_ft:.1f} s, accuracy {acc:.3f}")
        train, test = make_data(args.n_train, args.n_test, args.seed + 1)
        common = dict(k=args.k, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)

        ours_iia, ours_t, full_iia, _ = run_ours(model_dir, args.layer, train, test, **common)
        print(f"full-vector interchange at resid_pre {args.layer} pos 1: IIA {full_iia:.3f} "
              f"({'the variable is there' if full_iia >= 0.9 else 'WARNING: the variable is not carried here; try another --layer'})")
        plain_iia, plain_t = run_plain(model_dir, args.layer, train, test, **common)
        try:
            import pyvene  # noqa: F401

            pv_iia, pv_t, _ = run_pyvene(model_dir, args.layer, train, test, **common)
            peer = "pyvene 0.1.8"
        except ImportError:
            pv_iia, pv_t, peer = math.nan, math.nan, "pyvene (not installed)"

    n_steps = args.epochs * math.ceil(args.n_train / args.batch_size)
    print()
    print(f"DAS, k={args.k}, resid_pre {args.layer} pos 1, {args.n_train} train / {args.n_test} held-out pairs, "
          f"{n_steps} Adam steps (lr {args.lr}, batch {args.batch_size}), {torch.get_num_threads()} thread(s)")
    rows = [("ours (patching.train_das, nnsight backend)", ours_iia, ours_t),
            (f"{peer} LowRankRotatedSpaceIntervention", pv_iia, pv_t),
            ("plain torch reference (in this file)", plain_iia, plain_t)]
    print(f"| {'method':<50} | {'held-out IIA':>12} | {'wall s':>7} |")
    print(f"|{'-' * 52}|{'-' * 14}|{'-' * 9}|")
    for name, iia, t in rows:
        print(f"| {name:<50} | {iia:>12.3f} | {t:>7.2f} |")
    gap = ours_iia - pv_iia
    verdict = "PASS" if not math.isnan(gap) and gap >= -0.02 else "FAIL"
    print(f"IIA ours - pyvene = {gap:+.3f} ({verdict}, target >= -0.02); time ours / pyvene = {ours_t / pv_t:.2f}")
    print(f"total wall time {time.perf_counter() - t_all:.1f} s")


if __name__ == "__main__":
    main()
