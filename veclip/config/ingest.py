"""Config of the ingest stage (crawl -> bronze + quarantine)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from veclip.config.base import Section


class HttpConfig(Section):
    timeout_s: float = Field(10.0, gt=0, description="Connect and read timeout of one image request.")
    deadline_s: float = Field(30.0, gt=0, description="Longest time one download attempt may take: DNS lookup, "
                              "connect, TLS, headers, redirects and body together (a server that trickles bytes "
                              "is cut off: `timeout`).")
    max_redirects: int = Field(5, ge=0, description="Redirects followed per request (each target is checked again).")
    retries: int = Field(2, ge=0, description="Retries after a failed request (connection error, 429, 5xx).")
    backoff_s: float = Field(0.5, ge=0, description="First retry delay; doubles at each retry.")
    concurrency: int = Field(16, ge=1, description="Parallel requests per Spark task.")
    allow_private: bool = Field(False, description="Allow loopback and private-network addresses "
                                "(refused by default: a crawl must not reach internal services).")
    user_agent: str = Field("veclip-ingest/0.1", description="User-Agent header sent with image requests.")


class IngestConfig(Section):
    inputs: list[str] = Field(default_factory=list, description="Crawl paths or globs: webdataset .tar shards, "
                              "img2dataset parquet, URL tables (parquet/csv/jsonl) or VeCap JSON. A single string is accepted.")
    format: Literal["auto", "webdataset", "parquet", "url_table", "vecap_json"] = Field(
        "auto", description="Input format; `auto` decides per file from its extension and columns.")
    url_column: str = Field("url", description="URL column of URL tables and img2dataset parquet (matched case-insensitively).")
    text_column: str = Field("caption", description="AltText column of URL tables and img2dataset parquet "
                             "(matched case-insensitively; `TEXT` and `alt_text` are also recognised).")
    image_column: str = Field("jpg", description="Image-bytes column of img2dataset parquet output.")
    min_side: int = Field(32, ge=1, description="Smallest accepted image side in pixels (smaller: `too_small`).")
    max_pixels: int = Field(89_478_485, ge=1, description="Largest accepted width*height, checked from the header "
                            "before decoding (larger: `too_many_pixels`, a decompression-bomb guard). The "
                            "caption and gold decoders apply it too (Pillow's Image.MAX_IMAGE_PIXELS is set to it) "
                            "and reduce large images before RGB conversion: decoded memory stays under ~4 bytes x "
                            "this per image.")
    max_bytes: int = Field(20_000_000, ge=1, description="Largest accepted encoded image or HTTP body in bytes.")
    alt_text_max_chars: int = Field(1000, ge=16, description="Cleaned AltText is cut to this many characters.")
    image_formats: list[str] = Field(["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"], min_length=1,
                                     description="Accepted image formats (Pillow names); anything else is `not_an_image`.")
    files_per_partition: int = Field(1, ge=1, description="Input files handled by one Spark task.")
    urls_per_partition: int = Field(2000, ge=1, description="URL rows per Spark task when downloading images.")
    skip_ingested_files: bool = Field(True, description="Skip input files an earlier run read completely "
                                      "(same path, size and mtime, per the `ingest_files` table).")
    retry_quarantined: bool = Field(False, description="Try again the samples quarantined for a reason that may "
                                    "pass (timeout, dns_error, connection_error, truncated, http_429, http_5xx, damaged "
                                    "file): their files are read and URLs fetched again; a key that reaches bronze leaves "
                                    "quarantine. Also `--retry-quarantined`.")
    http: HttpConfig = Field(default_factory=HttpConfig, description="Image download settings for URL inputs.")

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        if isinstance(v, str):
            return [v]
        return v
