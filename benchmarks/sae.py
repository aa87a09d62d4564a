"""probes.sae against SAELens 6, on facts-bio's activations at the name, measured in one run.

    python -m benchmarks.sae                    # builds .cache/saelens-venv on first use (a few minutes)
    python -m benchmarks.sae --steps 300 --repeats 3

SAELens 6 requires TransformerLens < 4, so it runs in a virtual environment of its own,
``.cache/saelens-venv``, built with the pins in `PINS` (torch 2.13.0 CPU first, then sae-lens, which
brings TransformerLens 3.9 and its own transformers). `benchmarks/sae_worker.py` runs there and never
imports this project. This script

1. collects the activations of the facts-bio-sae card (last name token after block 3; 2 biographies
   per individual plus `<bos> first last`, about 11,000 rows of width 128);
2. **correctness**: trains one small SAE of each kind we save in SAELens's format (relu -> SAELens
   "standard", topk, jumprelu, and batchtopk, which is saved as "jumprelu"), saves each with
   `probes.sae.save_saelens`, and has the worker load it with SAELens's own ``SAE.load_from_disk`` and
   encode and decode the same activations: the largest absolute differences from ours;
3. **training throughput**: rows ("tokens") per CPU second of one thread, our ``train_sae(kind="topk")``
   against SAELens's ``SAETrainer`` with a ``TopKTrainingSAE`` fed by an iterator of batches of the same
   tensor (SAELens's ``DataProvider`` is any iterator of activation tensors), same width, k, batch size,
   steps and learning rate; medians of ``repeats`` runs each. Both add an auxiliary loss for dead latents
   (ours AuxK with coefficient 1/32, SAELens's TopK its default); we also keep decoder rows at unit norm
   and start ``b_dec`` at the geometric median, SAELens's defaults do neither.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from benchmarks import venvs
from benchmarks.timing import cpu_time

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "saelens-venv"
WORKER = Path(__file__).resolve().parent / "sae_worker.py"
# Found to work here (Python 3.11, 2026-12-06): sae-lens 6.54.12 brings transformer-lens 3.9.0 and transformers 5.25.
PINS = [["torch==2.13.0"], ["torch==2.13.0", "sae-lens==6.54.12"]]
IMPORT_CHECK = "from sae_lens import SAE, SAETrainer, TopKTrainingSAE"
KINDS = ("relu", "topk", "jumprelu", "batchtopk")


def ensure_venv(venv: Path = VENV) -> Path:
    """The venv's python, building the venv with `PINS` if it is missing or was built with other pins."""
    return venvs.ensure_venv(venv, PINS, IMPORT_CHECK, "sae-lens")


def activations() -> torch.Tensor:
    from interp import zoo
    from interp.circuits import Subject, facts_bio_sae

    s = Subject(zoo.load_model("facts-bio"), name=str(zoo.model_dir("facts-bio")))
    return facts_bio_sae.training_activations(s.model, facts_bio_sae.world_of(s), per_individual=2)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--d-sae", type=int, default=512)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from probes.sae import save_saelens, train_sae

    try:
        python = ensure_venv()
    except venvs.SetupError as err:
        print(f"SAELens could not be set up, so nothing was compared:\n{err}")
        return
    x = activations()
    lr = 2e-4 * (2**14 / args.d_sae) ** 0.5  # our default (Gao et al.'s scaling), given to both
    with tempfile.TemporaryDirectory() as tmp:
        saved = {}
        for kind in KINDS:
            sae, _ = train_sae(x, 256, kind=kind, k=16 if kind in ("topk", "batchtopk") else None, steps=100, batch_size=1024,
                               seed=0, progress=False)
            path = save_saelens(sae, Path(tmp) / kind, hook_name="blocks.3.hook_resid_post", model_name="facts-bio")
            with torch.no_grad():
                f = sae.encode(x)
                saved[kind] = {"dir": str(path), "encoded": f, "decoded": sae.decode(f)}
        torch.save({"x": x, "saved": saved, "train": {"d_sae": args.d_sae, "k": args.k, "steps": args.steps,
                                                        "batch_size": args.batch_size, "lr": lr, "repeats": args.repeats}},
                   Path(tmp) / "inputs.pt")
        ours = []
        for r in range(args.repeats):
            seconds, _ = cpu_time(lambda r=r: train_sae(x, args.d_sae, kind="topk", k=args.k, steps=args.steps,
                                                        batch_size=args.batch_size, lr=lr, seed=r, progress=False))
            ours.append(seconds)
        proc = subprocess.run([str(python), str(WORKER), tmp], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})
        if proc.returncode != 0:
            print(f"SAELens's worker failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
            return
        theirs = json.loads((Path(tmp) / "outputs.json").read_text())
    v = theirs["versions"]
    print(f"sae-lens {v['sae-lens']} (transformer-lens {v['transformer-lens']}, torch {v['torch']}); activations {tuple(x.shape)} "
          f"(facts-bio, blocks.3.hook_resid_post at the name); 1 thread each, CPU time; load average {os.getloadavg()[0]:.2f}")
    print("\n(a) our save_saelens, loaded by SAELens's SAE.load_from_disk: max |difference| from our encode / decode")
    print("| our kind | SAELens class | encode | decode | active latents agree | scale (max |f|, max |x_hat|) |")
    print("|---|---|---|---|---|---|")
    for kind, r in theirs["load"].items():
        print(f"| {kind} | {r['class']} | {r['encode_max_abs_diff']:.1e} | {r['decode_max_abs_diff']:.1e} | {r['active_agree']:.6f} | "
              f"{r['encode_scale']:.1f}, {r['decode_scale']:.1f} |")
    rows = args.steps * args.batch_size
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs["train_cpu_s"])
    print(f"\n(b) training a TopK SAE (d_in {x.shape[1]}, d_sae {args.d_sae}, k {args.k}, batch {args.batch_size}, {args.steps} steps, "
          f"lr {lr:.2e}); median of {args.repeats}")
    print("| trainer | CPU s | rows / s | ratio |")
    print("|---|---|---|---|")
    print(f"| probes.sae.train_sae | {ours_s:.2f} | {rows / ours_s:,.0f} | {theirs_s / ours_s:.2f}x |")
    print(f"| sae_lens SAETrainer | {theirs_s:.2f} | {rows / theirs_s:,.0f} | 1 |")
    print(f"all runs (CPU s): ours {[round(t, 2) for t in ours]}, SAELens {[round(t, 2) for t in theirs['train_cpu_s']]}; "
          f"FVU after training on all rows: SAELens {[round(f, 3) for f in theirs['train_fvu']]}")


if __name__ == "__main__":
    main()
