"""Config of the dedupe stage (bronze -> silver + dedupe_audit)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from veclip.config.base import Section


class DedupeConfig(Section):
    phash_max_hamming: int = Field(10, ge=0, le=32, description="Two images whose 64-bit pHashes differ in at "
                                   "most this many bits are near-duplicates (rule `near_image`).")
    phash_bands: int = Field(4, ge=1, le=16, description="LSH bands the pHash is cut into; a candidate pair "
                             "shares one band up to `phash_probe_radius` bits.")
    phash_probe_radius: int = Field(1, ge=0, le=2, description="Bits flipped when probing a band (multi-probe "
                                    "LSH). Pairs within bands*(radius+1)-1 bits are always found; further "
                                    "ones up to the threshold most of the time.")
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
    def _bands_fit(self) -> "DedupeConfig":
        if 64 // self.phash_bands < 4:
            raise ValueError(f"phash_bands={self.phash_bands}: bands of fewer than 4 bits match almost anything")
        return self

    @property
    def phash_guaranteed_hamming(self) -> int:
        """Largest distance the banding always finds (pigeonhole over bands, each probed to the radius)."""
        return self.phash_bands * (self.phash_probe_radius + 1) - 1
