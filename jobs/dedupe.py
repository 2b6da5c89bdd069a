"""Dedupe: bronze -> silver (duplicate group + canonical flag per row) + dedupe_audit (why each row was dropped).

    spark-submit jobs/dedupe.py --config conf/local.yaml --set paths.root=DIR
    python jobs/dedupe.py --set dedupe.phash_max_hamming=8

Only bronze rows not yet in silver are processed, against each other and against silver; a rerun
changes nothing. Prints the accounting (bronze = canonical + duplicates + unreadable, duplicates by
rule); exit code 1 when it does not add up.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from veclip.cli import run_job  # noqa: E402
from veclip.dedupe import run_dedupe  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_job("dedupe", run_dedupe, __doc__))
