"""`make test` relies on pytest-xdist's ``--dist loadgroup``: a module marked ``xdist_group`` (a
card's measurement, the wheel, the docs, a real model) runs on one worker, so it is computed once.
pytest 9.2 builds node ids in a way pytest-xdist 3.8 cannot suffix, and the groups silently split
across workers (every card measured twice: minutes of CI). pyproject.toml pins pytest below 9.2;
this test runs a small grouped suite on two workers and fails if the grouping is lost again."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap


def test_xdist_groups_run_on_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(textwrap.dedent("""
        import pytest

        pytestmark = pytest.mark.xdist_group("together")

        @pytest.mark.parametrize("i", range(6))
        def test_member(i):
            pass
    """))
    out = subprocess.run([sys.executable, "-m", "pytest", "-v", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider",
                          str(tmp_path / "test_grouped.py")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    workers = re.findall(r"\[(gw\d+)\].*PASSED", out.stdout)
    assert len(workers) == 6 and len(set(workers)) == 1, (
        f"the xdist_group was split across workers {sorted(set(workers))}: check the pytest / pytest-xdist versions\n{out.stdout[-2000:]}")
