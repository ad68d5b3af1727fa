"""The README's "Use it from Python" examples, run as written (small sizes through the
environment variables they read), in order, in a fresh directory."""
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples() -> list[str]:
    text = README.read_text()
    start = text.index("\n## Use it from Python\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else None]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_has_three_python_examples():
    assert len(_examples()) == 3


def test_readme_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADVGEOM_EXAMPLE_N", "20")
    monkeypatch.setenv("ADVGEOM_EXAMPLE_STEPS", "30")
    with torch.random.fork_rng():
        for i, code in enumerate(_examples()):
            exec(compile(code, f"README.md example {i + 1}", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert "standard suite at eps 0.3" in out
    assert (tmp_path / "runs/quickstart/accuracy_vs_eps.png").stat().st_size > 0
    assert list(tmp_path.glob("runs/train/Normalized-*/final.safetensors"))
    rows = re.findall(r"my_mlp (none|trades)\s+eps=", out)
    assert sorted(set(rows)) == ["none", "trades"] and len(rows) == 6
