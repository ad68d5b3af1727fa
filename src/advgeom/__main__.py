"""``python -m advgeom`` (and ``torchrun --nproc_per_node=N -m advgeom ...``): the CLI."""
from advgeom.cli import app

app(prog_name="advgeom")
