"""The Python examples of the documentation, run as written in a fresh directory: the
README's quick start (with its sizes shrunk: 30 training steps, 20 points) and the three
examples of docs/python.md (small sizes through the environment variables they read), in
order."""
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PYTHON_PAGE = ROOT / "docs" / "python.md"


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _quick_start() -> str:
    blocks = _code_blocks(_section(README.read_text(), "## Quick start in Python"))
    assert len(blocks) == 1, "the README's quick start is one Python block"
    return blocks[0]


def _shrunk(code: str) -> str:
    """The quick start at test size: each size it prints is replaced exactly once."""
    for old, new in (("range(300)", "range(30)"), ("[:200]", "[:20]"), ("n=200", "n=20")):
        assert code.count(old) >= 1, f"the quick start no longer says {old}"
        code = code.replace(old, new)
    return code


def test_the_python_page_has_three_examples():
    assert len(_code_blocks(PYTHON_PAGE.read_text())) == 3


def test_readme_quick_start_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with torch.random.fork_rng():
        exec(compile(_shrunk(_quick_start()), "README.md quick start", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert "clean accuracy:" in out and "n=20 " in out
    assert re.search(r"^worst_case\s+\d+\.\d+\s+\d+\.\d+$", out, flags=re.M), out
    assert "PASS threat_model" in out


def test_python_page_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADVGEOM_EXAMPLE_N", "20")
    monkeypatch.setenv("ADVGEOM_EXAMPLE_STEPS", "30")
    with torch.random.fork_rng():
        for i, code in enumerate(_code_blocks(PYTHON_PAGE.read_text())):
            exec(compile(code, f"docs/python.md example {i + 1}", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert "standard suite at eps 0.3" in out
    assert (tmp_path / "runs/quickstart/accuracy_vs_eps.png").stat().st_size > 0
    assert list(tmp_path.glob("runs/train/Normalized-*/final.safetensors"))
    rows = re.findall(r"my_mlp (none|trades)\s+eps=", out)
    assert sorted(set(rows)) == ["none", "trades"] and len(rows) == 6
