"""VeCLIP on Spark: visual-enriched captions for CLIP training on web crawls.

Stages (one module each): ingest -> dedupe -> caption -> rewrite -> gold -> train -> evaluate.
Every stage reads and writes Delta tables through `veclip.tables`, takes its own section of the
typed config (`veclip.config`) and returns a `veclip.report.StageReport` with its accounting.
"""

__version__ = "0.1.0"
