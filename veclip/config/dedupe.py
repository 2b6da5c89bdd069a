"""Config of the dedupe stage."""

from __future__ import annotations

from pydantic import Field

from veclip.config.base import Section


class DedupeConfig(Section):
    pass
