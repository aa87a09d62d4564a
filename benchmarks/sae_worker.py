"""Worker for `benchmarks/sae.py`: SAELens reads our saved SAEs and trains on the same activations, in its own venv.

    .cache/saelens-venv/bin/python benchmarks/sae_worker.py DIR

Imports only torch and SAELens (not this project: SAELens 6 needs TransformerLens < 4). ``DIR/inputs.pt``
(written by the parent) holds activations ``x [n d_in]``, for each architecture the directory our
``save_saelens`` wrote and our encodings / reconstructions of ``x``, and the training settings. The worker

1. loads each directory with SAELens's own loader (``sae_lens.SAE.load_from_disk``) and records the
   largest absolute difference of its ``encode(x)`` and ``decode(encode(x))`` from ours;
2. trains a ``TopKTrainingSAE`` with SAELens's ``SAETrainer`` fed by an iterator over batches of ``x``
   (its ``DataProvider`` is any iterator of activation tensors), ``repeats`` times, timing each ``fit()``
   in CPU seconds of this process with one thread;
3. writes ``DIR/outputs.json``.
"""

from __future__ import annotations

import json
import sys
import time
from importlib.metadata import version
from pathlib import Path


def cpu_time(fn):
    start = time.process_time()
    out = fn()
    return time.process_time() - start, out


def batches(x, batch_size: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0] - batch_size + 1, batch_size):
            yield x[order[i:i + batch_size]]


def main(folder: str) -> None:
    import torch
    from sae_lens import SAE

    torch.set_num_threads(1)
    folder = Path(folder)
    inp = torch.load(folder / "inputs.pt")
    x = inp["x"]
    out: dict = {"versions": {p: version(p) for p in ("sae-lens", "torch", "transformer-lens")}, "load": {}}
    for kind, item in inp["saved"].items():
        sae = SAE.load_from_disk(item["dir"], device="cpu")
        with torch.no_grad():
            f = sae.encode(x)
            recon = sae.decode(f)
        out["load"][kind] = {"class": type(sae).__name__, "architecture": sae.cfg.architecture(),
                             "encode_max_abs_diff": float((f - item["encoded"]).abs().max()),
                             "decode_max_abs_diff": float((recon - item["decoded"]).abs().max()),
                             "encode_scale": float(item["encoded"].abs().max()), "decode_scale": float(item["decoded"].abs().max()),
                             "active_agree": float(((f > 0) == (item["encoded"] > 0)).float().mean())}

    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    t = inp["train"]
    times = []
    for r in range(t["repeats"]):
        torch.manual_seed(r)
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=x.shape[1], d_sae=t["d_sae"], k=t["k"], device="cpu"))
        cfg = SAETrainerConfig(total_training_samples=t["steps"] * t["batch_size"], train_batch_size_samples=t["batch_size"],
                               lr=t["lr"], lr_end=t["lr"], device="cpu")  # lr_end: the runner config sets it, the trainer asserts it
        trainer = SAETrainer(cfg, sae, batches(x, t["batch_size"], r))
        seconds, sae = cpu_time(trainer.fit)
        times.append(seconds)
        with torch.no_grad():
            err = (sae.decode(sae.encode(x)) - x).pow(2).sum()
            fvu = float(err / (x - x.mean(0)).pow(2).sum())
        out.setdefault("train_fvu", []).append(fvu)
    out["train_cpu_s"] = times
    (folder / "outputs.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
