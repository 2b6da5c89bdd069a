"""Config of the train stage."""

from __future__ import annotations

from pydantic import Field

from veclip.config.base import Section


class TrainConfig(Section):
    pass
