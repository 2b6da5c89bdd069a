"""Run a Databricks source-format notebook top to bottom as a script, against local Spark and MLflow.

Markdown and magic cells (`# MAGIC ...`, e.g. %md and %pip) are skipped (the tests run where veclip
and its stack are installed); code cells run in one namespace holding `spark`, a `dbutils` whose
widgets return the given values (else their defaults) and whose `library.restartPython()` does nothing,
`display` (prints the first rows) and `displayHTML` (keeps the HTML for the test to inspect).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

CELL = "# COMMAND ----------"


class _Widgets:
    def __init__(self, values: dict[str, str]):
        self.values, self.defaults = dict(values), {}

    def text(self, name: str, default: str, label: str = "") -> None:
        self.defaults[name] = default

    def dropdown(self, name: str, default: str, choices, label: str = "") -> None:
        self.defaults[name] = default

    def get(self, name: str) -> str:
        if name in self.values:
            return self.values[name]
        if name not in self.defaults:
            raise KeyError(f"widget '{name}' was never declared")
        return self.defaults[name]


class _Library:
    def restartPython(self) -> None:  # noqa: N802 (Databricks' name)
        """A no-op: %pip cells are skipped, veclip is already installed where the tests run."""


class Dbutils:
    def __init__(self, widgets: dict[str, str]):
        self.widgets = _Widgets(widgets)
        self.library = _Library()


def code_cells(path: pathlib.Path) -> list[str]:
    text = path.read_text()
    if not text.startswith("# Databricks notebook source"):
        raise ValueError(f"{path} is not a Databricks source-format notebook")
    cells = [c.strip() for c in text.split(CELL)[0:]]
    cells[0] = cells[0].replace("# Databricks notebook source", "", 1).strip()
    return [c for c in cells if c and not all(line.startswith("# MAGIC") for line in c.splitlines())]


def run_notebook(path: pathlib.Path, spark, widgets: dict[str, str]) -> dict[str, Any]:
    html: list[str] = []
    shown: list[Any] = []

    def display(obj) -> None:
        shown.append(obj)
        print(obj.limit(20).toPandas().to_string() if hasattr(obj, "toPandas") else obj)

    namespace: dict[str, Any] = {"spark": spark, "dbutils": Dbutils(widgets), "display": display,
                                 "displayHTML": html.append, "__name__": "__notebook__"}
    cwd = os.getcwd()
    os.chdir(path.parent)  # as on Databricks: a notebook runs from its own folder
    try:
        for i, cell in enumerate(code_cells(path)):
            try:
                exec(compile(cell, f"{path.name}[cell {i}]", "exec"), namespace)
            except Exception as e:
                raise AssertionError(f"{path.name}: cell {i} failed: {type(e).__name__}: {e}\n{cell}") from e
    finally:
        os.chdir(cwd)
    namespace["_html"], namespace["_shown"] = html, shown
    return namespace
