"""Config of the gold stage (the training table)."""

from __future__ import annotations

from pydantic import Field

from veclip.config.base import Section


class GoldConfig(Section):
    image_size: int = Field(256, ge=32, description="Images are downscaled so their shorter side is at most "
                            "this many pixels (re-encoded once, as JPEG), enough for 224 px training crops.")
    jpeg_quality: int = Field(90, ge=50, le=100, description="JPEG quality of the re-encoded training images.")
    files: int = Field(8, ge=1, description="Gold is written as this many Parquet files (rows hashed by key). "
                       "Each training process streams whole files, so use at least train.num_processes; "
                       "several files per process balance the ranks (e.g. ~1 file per 50k rows on a big crawl).")
    require_vecap: bool = Field(False, description="Only rows with a VeCap go to gold. Off by default: the "
                                "trainer falls back to the AltText where a VeCap is missing.")
