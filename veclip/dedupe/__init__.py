"""Dedupe stage: bronze -> silver + dedupe_audit. See `veclip.dedupe.stage` for the plan.

Modules: `pixels` (decode once: pixel sha256 + grey thumbnail), `phash` (batched DCT pHash),
`text` (normalisation, boilerplate, MinHash), `features` (pandas UDFs), `groups` (exact hubs,
pHash block index, connected components), `buckets` (LSH bucket pairs with the hub cap), `text_groups` (low-information texts, near_text edges),
`policy` (keep policy, duplicate explanations), `stage` (`run_dedupe`).
"""

__all__ = ["run_dedupe"]


def __getattr__(name: str):
    # Lazy: Spark's Python workers import veclip.dedupe.pixels/phash for the UDFs and should not pay
    # for the driver-side stage (Delta, MLflow config) they never use.
    if name == "run_dedupe":
        from veclip.dedupe.stage import run_dedupe

        return run_dedupe
    raise AttributeError(f"module 'veclip.dedupe' has no attribute {name!r}")
