"""Caption stage: canonical samples without a caption from the configured captioner -> captions table.

    spark-submit jobs/caption.py --config conf/local.yaml --set caption.model=PATH_OR_HF_ID
    python jobs/caption.py --config conf/local.yaml --set caption.model=PATH --retry-errors

Resumable: kill it and run it again, only the missing captions are produced. A second captioner
(--set caption.model=OTHER) captions the same rows alongside the first. Prints the accounting:
canonical = already_done + to_caption, to_caption = captioned + failed. Offline, a tiny random-weight
LLaVA (meaningless captions) is built with `python -m veclip.caption.tiny llava PATH`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from veclip.cli import run_job  # noqa: E402


def add_args(parser):
    parser.add_argument("--retry-errors", action="store_true",
                        help="also recaption rows whose earlier caption failed (their error row is overwritten)")


def run_caption(cfg, spark, args):
    from veclip.caption.stage import run_caption as run
    return run(cfg, spark, args)


if __name__ == "__main__":
    sys.exit(run_job("caption", run_caption, __doc__, add_args))
