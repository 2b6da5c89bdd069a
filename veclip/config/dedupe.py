"""Config of the dedupe stage (bronze -> silver + dedupe_audit)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from veclip.config.base import Section


class DedupeConfig(Section):
    phash_max_hamming: int = Field(10, ge=0, le=32, description="Two images whose 64-bit pHashes differ in at "
                                   "most this many bits are near-duplicates (rule `near_image`).")
    phash_index: Literal["auto", "blocks", "exhaustive"] = Field(
        "auto", description="How near-duplicate pHash pairs are found: `blocks` (multi-index hashing: work "
        "linear in the crawl; pairs beyond phash_blocks - phash_key_blocks bits found only when their differing "
        "bits fall in few blocks), "
        "`exhaustive` (every new hash against every hash: exact at any distance, quadratic), or `auto` "
        "(exhaustive while new x all distinct hashes <= exhaustive_max_pairs, else blocks).")
    exhaustive_max_pairs: int = Field(200_000_000, ge=0, description="Largest new x all pHash comparisons "
                                      "for which `phash_index: auto` searches exhaustively (a first run of ~14,000 images).")
    phash_blocks: int = Field(8, ge=2, le=16, description="Blocks the 64-bit pHash is cut into by the `blocks` "
                              "index. Pairs within phash_blocks - phash_key_blocks bits are always found.")
    phash_key_blocks: int = Field(4, ge=1, le=15, description="Blocks per index key: one table per choice of "
                                  "this many blocks (C(8,4) = 70 tables of 32-bit keys by default). Fewer bits "
                                  "per key collide more: below ~28 bits the work grows with the square of the "
                                  "crawl again.")
    bucket_cap: int = Field(200, ge=2, description="Members of one LSH bucket (a pHash key or a MinHash band) "
                            "that meet each other; a larger bucket is paired only within sliding windows of "
                            "this many members in sort order (counted in the report as *_buckets_over_cap).")
    text_min_jaccard: float = Field(0.7, gt=0, le=1, description="Word-shingle Jaccard similarity from which "
                                    "two AltTexts are near-duplicates (normalised equal texts have 1.0).")
    text_image_max_hamming: int = Field(16, ge=-1, le=32, description="Near-duplicate AltTexts merge two "
                                        "samples only if their images are also this close (a looser pHash "
                                        "threshold); -1 never merges on text.")
    text_shingle_words: int = Field(2, ge=1, le=5, description="Words per shingle for the AltText MinHash.")
    minhash_bands: int = Field(16, ge=1, description="MinHash LSH bands (candidate when one band matches).")
    minhash_rows: int = Field(4, ge=1, description="MinHash values per band (bands*rows permutations).")
    minhash_seed: int = Field(1, description="Seed of the MinHash permutations; changing it changes "
                              "candidates, not results above the threshold.")
    boilerplate_min_groups: int = Field(3, ge=2, description="An AltText found on this many different image "
                                        "groups is flagged low-information (e.g. a shop's name) and never "
                                        "used to merge.")
    boilerplate_texts: list[str] = Field(default_factory=list, description="Extra low-information AltTexts "
                                         "(matched after normalisation), added to the built-in list.")
    batch_size: int = Field(256, ge=1, description="Images per batch of the hashing pandas UDF (Arrow "
                            "records per batch).")
    device: str = Field("auto", description="Where the batched DCT runs: auto (the task's GPU if any), cpu, cuda.")
    max_iterations: int = Field(40, ge=1, description="Connected-components rounds before the stage gives "
                                "up with an error (rounds grow with the longest chain of near-duplicates).")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu") and not v.startswith("cuda"):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return v

    @field_validator("boilerplate_texts", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _index_fits(self) -> "DedupeConfig":
        if self.phash_key_blocks >= self.phash_blocks:
            raise ValueError(f"phash_key_blocks={self.phash_key_blocks} must be below phash_blocks={self.phash_blocks}")
        key_bits = 64 * self.phash_key_blocks // self.phash_blocks
        if key_bits < 16:
            raise ValueError(f"phash_key_blocks={self.phash_key_blocks} of {self.phash_blocks} blocks: keys of "
                             f"{key_bits} bits match almost anything")
        if math.comb(self.phash_blocks, self.phash_key_blocks) > 1000:
            raise ValueError(f"phash_blocks={self.phash_blocks}, phash_key_blocks={self.phash_key_blocks}: "
                             f"{math.comb(self.phash_blocks, self.phash_key_blocks)} index tables (at most 1000)")
        return self

    @property
    def phash_tables(self) -> int:
        """Index tables (one key per table per hash) of the `blocks` index."""
        return math.comb(self.phash_blocks, self.phash_key_blocks)

    @property
    def phash_guaranteed_hamming(self) -> int:
        """Largest distance always found (blocks, and auto on a large crawl: pigeonhole, at most that many
        blocks differ; exhaustive: every distance)."""
        return 64 if self.phash_index == "exhaustive" else self.phash_blocks - self.phash_key_blocks
