"""The README's Python example runs as written (in a scratch folder that sees the repository's data)."""

import os
import re
import subprocess
import sys

from conftest import ROOT


def test_the_readme_python_example_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert len(blocks) == 1, "the README has one Python example"
    (tmp_path / "data").symlink_to(ROOT / "data")
    (tmp_path / "runs").mkdir()
    script = tmp_path / "example.py"
    script.write_text(blocks[0])
    # Unbuffered, so that Python's prints and the Rust commands' (straight to fd 1) keep their order.
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=environment
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "2048", lines[:3]
    # The phi of the first three backmapped structures: -80 degrees (mdtraj reads float32 positions).
    phis = [float(v) for v in lines[-1].strip("[]").split()]
    assert all(abs(p + 80.0) < 1e-3 for p in phis), phis
    assert os.path.getsize(tmp_path / "runs" / "py_backmapped.dcd") > 0
