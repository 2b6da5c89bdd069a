"""Caption stage: canonical samples without a caption from the configured captioner -> captions table.

    spark-submit jobs/caption.py --config conf/local.yaml --set caption.model=PATH_OR_HF_ID
    python jobs/caption.py --config conf/local.yaml --set caption.model=PATH --retry-errors

Resumable: kill it and run it again, only the missing captions are produced. A second captioner
(--set caption.model=OTHER) captions the same rows alongside the first. Prints the accounting:
canonical = already_done + to_caption, to_caption = captioned + failed. Offline, a tiny random-weight
LLaVA (meaningless captions) is built with `python -m veclip.caption.tiny llava PATH`.
The same job: `veclip caption ...` or `python -m veclip caption ...` (veclip.cli), with the same flags.
"""

import sys

from veclip.cli import main

if __name__ == "__main__":
    sys.exit(main(["caption", *sys.argv[1:]]))
