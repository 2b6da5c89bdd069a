"""Print every config key with its default and description, as a Markdown table (used for the README).

    python -m veclip.config              # all sections
    python -m veclip.config caption      # one section
"""

from __future__ import annotations

import sys

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from veclip.config import Config


def rows(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from rows(ann, key + ".")
            continue
        item = getattr(ann, "__args__", (None,))[0]  # list[Section]: document the entries' fields too
        if getattr(ann, "__origin__", None) is list and isinstance(item, type) and issubclass(item, BaseModel):
            yield key, field.get_default(call_default_factory=True), (field.description or "").replace("|", "\\|")
            yield from rows(item, key + "[].")
            continue
        default = field.get_default(call_default_factory=True)
        yield key, default, (field.description or "").replace("|", "\\|")


def table(section: str | None = None) -> str:
    lines = ["| key | default | what it does |", "| --- | --- | --- |"]
    for key, default, desc in rows(Config):
        if section and not key.startswith(section + "."):
            continue
        if key.count(".") == 0:
            continue
        shown = "" if default is None else "*required*" if default is PydanticUndefined else f"`{default}`"
        lines.append(f"| `{key}` | {shown} | {desc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1] if len(sys.argv) > 1 else None))
