"""Config of the rewrite stage."""

from __future__ import annotations

from pydantic import Field

from veclip.config.base import Section


class RewriteConfig(Section):
    pass
