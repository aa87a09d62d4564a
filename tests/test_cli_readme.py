"""The README's promises: its two commands come first, its quickstart runs, `interp` exists."""

import re
import subprocess
import sys
from pathlib import Path

import torch

from interp.figures import reproduce
from interp.figures.induction import induction_attention

ROOT = Path(__file__).resolve().parent.parent


def test_readme_starts_with_the_two_commands():
    first_block = ROOT.joinpath("README.md").read_text().split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make reproduce", "make test"]


def test_readme_quickstart_runs_and_shows_the_ablation(capsys):
    text = ROOT.joinpath("README.md").read_text()
    code = re.search(r"## Quickstart\n\n```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    exec(compile(code, "README quickstart", "exec"), {})
    printed = capsys.readouterr().out.split()
    shape, before, after = printed[:4], float(printed[-2]), float(printed[-1])
    assert "torch.Size([50," in " ".join(shape)
    assert before >= 0.9 and after <= 0.1


def test_console_command_exists():
    exe = Path(sys.executable).parent / "interp"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("list-models", "train", "reproduce"):
        assert command in out
    bad = subprocess.run([str(exe), "train", "inductoin-2l"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Did you mean 'induction-2l'" in bad.stderr


def test_reproduce_writes_figures_and_report(tmp_path):
    results = reproduce("all", out_dir=tmp_path / "figures")
    for r in results:
        assert all(p.exists() and p.stat().st_size > 5000 for p in r.paths)
    report = (tmp_path / "REPORT.md").read_text()
    assert "induction_training" in report and "![induction_attention](figures/induction_attention.png)" in report


def test_figure_numbers_change_with_the_model(tmp_path):
    from interp import zoo

    shipped = induction_attention(out_dir=tmp_path, model=zoo.load_model("induction-2l"))
    blank = induction_attention(out_dir=tmp_path, model=zoo.load_model("induction-2l").blank_copy(seed=3))
    diffs = [abs(shipped.numbers[k] - blank.numbers[k]) for k in shipped.numbers]
    assert max(diffs) > 0.3 and torch.tensor(diffs).mean() > 0.05


def test_interp_circuits_holds_a_card_whose_committed_fail_rows_fail_again(monkeypatch, capsys):
    """`interp circuits` exits 0 when the measurement agrees with the card, FAIL rows committed as
    findings included, and 1 when a claim the card commits as PASS fails (no model is measured here:
    the committed numbers stand in for the measurement)."""
    import dataclasses

    from interp import circuits, cli

    card = circuits.get("smollm2-agreement")
    committed = circuits.committed_result(card)
    assert any(not r.passed for r in committed.results), "the agreement card commits a FAIL row (das_site)"
    monkeypatch.setattr(circuits, "evaluate", lambda card, model=None: committed)
    same_threads = ["--threads", str(torch.get_num_threads())]  # leave this worker's torch as it was
    assert cli.main(["circuits", "smollm2-agreement", *same_threads]) == 0
    out = capsys.readouterr().out
    assert "committed as FAIL" in out and "all claims hold (1 FAIL as committed: smollm2-agreement/das_site)" in out

    broken = circuits.CardResult(card, [dataclasses.replace(r, passed=False) for r in committed.results])
    monkeypatch.setattr(circuits, "evaluate", lambda card, model=None: broken)
    assert cli.main(["circuits", "smollm2-agreement", *same_threads]) == 1
    assert "1 claim(s) FAIL" in capsys.readouterr().out
