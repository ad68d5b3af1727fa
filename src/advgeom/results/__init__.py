"""Tidy result rows, the SQLite store, and rendering (tables, plots) as pure functions of rows."""
from advgeom.results.env import environment
from advgeom.results.rows import Row
from advgeom.results.store import DEFAULT_PATH, ResultStore

__all__ = ["DEFAULT_PATH", "ResultStore", "Row", "environment"]
