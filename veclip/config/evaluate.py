"""Config of the evaluate stage."""

from __future__ import annotations

from pydantic import Field

from veclip.config.base import Section


class EvalConfig(Section):
    pass
