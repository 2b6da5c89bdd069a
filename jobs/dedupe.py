"""Dedupe: bronze -> silver (duplicate group + canonical flag per row) + dedupe_audit (why each row was dropped).

    spark-submit jobs/dedupe.py --config conf/local.yaml --set paths.root=DIR
    python jobs/dedupe.py --set dedupe.phash_max_hamming=8

Only bronze rows not yet in silver are processed, against each other and against silver; a rerun
changes nothing. Prints the accounting (bronze = canonical + duplicates + unreadable, duplicates by
rule); exit code 1 when it does not add up.
The same job: `veclip dedupe ...` or `python -m veclip dedupe ...` (veclip.cli), with the same flags.
"""

import sys

from veclip.cli import main

if __name__ == "__main__":
    sys.exit(main(["dedupe", *sys.argv[1:]]))
