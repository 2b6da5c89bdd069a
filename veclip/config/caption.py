"""Config of the caption stage."""

from __future__ import annotations

from pydantic import Field

from veclip.config.base import Section


class CaptionConfig(Section):
    pass
