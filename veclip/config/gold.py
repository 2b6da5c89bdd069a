"""Config of the gold stage."""

from __future__ import annotations

from pydantic import Field

from veclip.config.base import Section


class GoldConfig(Section):
    pass
