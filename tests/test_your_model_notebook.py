"""notebooks/your_model.ipynb runs on a checkpoint directory handed to it through INTERP_MODEL_DIR.

The test saves a random GPT-2 whose shape differs from the notebook's built-in default (3 layers,
6 heads, d_model 48) into a temporary directory, with a word-level tokenizer covering the words of
the notebook's own NAMES and TEMPLATE (read from its settings cell), points INTERP_MODEL_DIR at it,
executes the notebook in memory with nbclient (cwd = notebooks/, as tests/test_notebooks.py does),
and checks from the outputs that this directory, not the default model, was studied.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "your_model.ipynb"


def _settings(nb) -> dict:
    """The literal settings (NAMES, TEMPLATE) assigned in the notebook's first code cell."""
    cell = next(c for c in nb.cells if c.cell_type == "code")
    source = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("NAMES", "TEMPLATE"):
                found[name] = ast.literal_eval(node.value)
    assert set(found) == {"NAMES", "TEMPLATE"}, "the settings cell must assign NAMES and TEMPLATE literally"
    assert "os.environ.get(\"INTERP_MODEL_DIR\")" in cell.source, "MODEL_DIR must read INTERP_MODEL_DIR"
    return found


def _outputs(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type == "error":
                parts.append(f"{out.ename}: {out.evalue}")
            elif "text/plain" in out.get("data", {}):
                parts.append(out["data"]["text/plain"])
    return "\n".join(parts)


@pytest.mark.slow
def test_notebook_studies_the_directory_in_interp_model_dir(tmp_path, monkeypatch):
    import nbclient  # the dev extra installs both; a missing one is a failure, not a skip
    import nbformat
    from nbclient.exceptions import CellExecutionError
    from transformers import GPT2Config, GPT2LMHeadModel

    from interp.tokenizers import word_tokenizer

    before = NOTEBOOK.read_bytes()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    settings = _settings(nb)
    words = settings["TEMPLATE"].format(A="", B="", S="").split() + list(settings["NAMES"])

    model_dir = tmp_path / "my checkpoint"  # a space, as in many users' paths
    tokenizer = word_tokenizer(sorted(set(words)), model_dir)
    torch.manual_seed(1)
    config = GPT2Config(n_layer=3, n_embd=48, n_head=6, n_positions=40, vocab_size=len(tokenizer),
                        bos_token_id=0, eos_token_id=0, pad_token_id=0)
    GPT2LMHeadModel(config).eval().save_pretrained(model_dir)

    for var, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg",
                       "TOKENIZERS_PARALLELISM": "false"}.items():
        monkeypatch.setenv(var, os.environ.get(var, value))
    monkeypatch.setenv("INTERP_MODEL_DIR", str(model_dir))  # the kernel inherits it
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a tiny model gains nothing from a second thread
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=False,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{NOTEBOOK.name} failed on {model_dir}:\n{e}", pytrace=False)

    text = _outputs(nb)
    assert f"model directory: {model_dir}" in text
    assert "built a random" not in text  # the default model was not built
    assert f"3 layers x 6 heads (key/value heads: 6), d_model 48, d_head 8, d_vocab {len(tokenizer)}" in text
    assert "max |logit difference| between the backends" in text
    n = len(settings["NAMES"])
    assert f"{2 * n * (n - 1)} prompt pairs" in text  # every ordered pair of NAMES, in both orders
    assert "blocks.2.hook_resid_post" in text  # the probe sweep reached the last of 3 layers
    assert NOTEBOOK.read_bytes() == before, "executing the notebook changed the committed file"
