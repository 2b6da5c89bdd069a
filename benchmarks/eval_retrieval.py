"""How long the retrieval metrics take at COCO-5k scale (5,000 images x 25,000 captions) on random embeddings.

    .venv/bin/python benchmarks/eval_retrieval.py                  # 5k x 25k, d=512
    .venv/bin/python benchmarks/eval_retrieval.py --images 1000 --dim 256 --threads 1

Prints, side by side: the chunked rank counting of veclip.evaluate.metrics (what evaluation uses),
the same with a smaller chunk, and the textbook way (the whole similarity matrix, then torch.topk
both ways), with the memory each holds at once and the ratio to the textbook time. The recalls of
all variants are checked to be identical (random floats have no ties).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from veclip.evaluate.metrics import CHUNK_ELEMENTS, normalize, recall_at_k, retrieval_ranks  # noqa: E402

KS = (1, 5, 10)


def textbook(images, texts, text_image):
    """Full matrix + topk: hit if any positive is among the top K (memory: n x m floats)."""
    sims = images @ texts.T
    top = sims.topk(max(KS), dim=1).indices                       # (n, 10) caption indices
    hit_rank_i2t = torch.full((images.shape[0],), max(KS), dtype=torch.long)
    own = text_image[top] == torch.arange(images.shape[0])[:, None]
    first = torch.where(own.any(1), own.float().argmax(1), torch.full_like(hit_rank_i2t, max(KS)))
    hit_rank_i2t = first
    top_t = sims.T.topk(max(KS), dim=1).indices                   # (m, 10) image indices
    own_t = top_t == text_image[:, None]
    hit_rank_t2i = torch.where(own_t.any(1), own_t.float().argmax(1), torch.full((texts.shape[0],), max(KS)))
    return hit_rank_i2t, hit_rank_t2i


def timed(fn, repeat):
    """(best wall seconds, best CPU seconds of this process, result)."""
    best, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        best, cpu = min(best, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return best, cpu, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    n, m = args.images, args.images * args.captions_per_image
    images = normalize(torch.randn(n, args.dim, generator=g))
    texts = normalize(torch.randn(m, args.dim, generator=g))
    text_image = torch.arange(n).repeat_interleave(args.captions_per_image)
    print(f"retrieval metrics: {n:,} images x {m:,} captions, d={args.dim}, torch threads "
          f"{torch.get_num_threads()}, best of {args.repeat}")

    rows = []
    for label, chunk in (("chunked rank counting (default)", CHUNK_ELEMENTS),
                         ("chunked rank counting, 1/8 chunk", CHUNK_ELEMENTS // 8)):
        secs, cpu, (i2t, t2i) = timed(lambda: retrieval_ranks(images, texts, text_image, chunk), args.repeat)
        rows.append((label, secs, cpu, chunk * 4, recall_at_k(i2t, KS), recall_at_k(t2i, KS)))
    secs, cpu, (i2t, t2i) = timed(lambda: textbook(images, texts, text_image), args.repeat)
    rows.append(("full matrix + topk (textbook)", secs, cpu, n * m * 4, recall_at_k(i2t, KS), recall_at_k(t2i, KS)))

    base = rows[-1][1]
    print(f"{'method':<34}{'wall s':>8}{'cpu s':>8}{'vs textbook':>13}{'sims held':>11}   I2T R@1/5/10"
          "      T2I R@1/5/10")
    for label, secs, cpu, mem, ri, rt in rows:
        print(f"{label:<34}{secs:>8.2f}{cpu:>8.2f}{base / secs:>12.2f}x{mem / 2**20:>8.0f} MB   "
              f"{ri[1]:.2f}/{ri[5]:.2f}/{ri[10]:.2f}   {rt[1]:.2f}/{rt[5]:.2f}/{rt[10]:.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wall times stretch "
          "when the machine is shared; cpu s is this process's CPU time)")
    same = all(r[4] == rows[0][4] and r[5] == rows[0][5] for r in rows)
    print(f"recalls identical across methods: {same}  (chance level: I2T R@1 ~ {100 * args.captions_per_image / m:.3f}%, "
          f"T2I R@1 ~ {100 / n:.3f}%)")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
