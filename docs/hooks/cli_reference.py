"""MkDocs hook: the CLI reference page is written at build time from ``advgeom --help``
and each subcommand's ``--help``, so it cannot drift from the command line."""
from __future__ import annotations


MARKER = "<!-- advgeom-cli-help -->"
WIDTH = "100"


def cli_help() -> str:
    """Markdown: one section per command with its ``--help`` text in a code block."""
    import typer
    from typer.testing import CliRunner

    from advgeom.cli import app

    env = {"TERMINAL_WIDTH": WIDTH, "COLUMNS": WIDTH, "NO_COLOR": "1", "TERM": "dumb"}
    runner = CliRunner()
    parts = []
    for name in [None, *typer.main.get_command(app).commands]:
        args = ([name] if name else []) + ["--help"]
        out = runner.invoke(app, args, env=env, prog_name="advgeom")
        if out.exit_code != 0:
            raise RuntimeError(f"advgeom {' '.join(args)} failed: {out.output}")
        text = "\n".join(line.rstrip() for line in out.output.splitlines()).strip("\n")
        title = f"advgeom {name}" if name else "advgeom"
        parts.append(f"## `{title}`\n\n```text\n{text}\n```\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_help())
