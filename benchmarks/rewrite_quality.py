"""Fusion quality on real AltTexts: are the AltText's names and the caption's objects kept? How often
does the fallback replace the LLM? How long are VeCaps in CLIP tokens?

    .venv/bin/python benchmarks/rewrite_quality.py                 # 1,000 AltTexts (SmolLM2 on 2 cores: long)
    .venv/bin/python benchmarks/rewrite_quality.py --limit 200 --out work/benchmarks/rewrite_quality.json

Inputs: real AltTexts from alttext-10k with STAND-IN captions (random COCO-mini human captions; no
images exist for these URLs: see rewrite_inputs.py). Runs the rewriter standalone (the same per-batch
code as the Spark stage) and reports, over the VeCaps it produced:
- proper nouns kept: the AltText's proper nouns are its capitalised words that do not open a
  sentence and are not stop words, plus 4-digit years (a heuristic: no POS tagger is installed).
  Share of VeCaps keeping all of them / at least one, and the mean fraction kept, over rows with any;
- caption nouns kept: the caption's content words (stop words and -ing verbs removed), the same
  three figures;
- fallback rate and its reasons; mean/max VeCap length in CLIP tokens (open_clip tokenizer);
each for all rows, for accepted LLM outputs and for fallbacks, so the LLM and the rule are seen apart.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rewrite_inputs import stand_in_pairs  # noqa: E402

_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")
_YEAR = re.compile(r"^(1[5-9]\d\d|20\d\d)$")


def proper_nouns(text: str) -> set[str]:
    from veclip.rewrite.validate import STOPWORDS, sentences

    out = set()
    for sent in sentences(text or ""):
        toks = _TOKEN.findall(sent)
        for i, t in enumerate(toks):
            low = t.lower()
            if _YEAR.match(t) or (i > 0 and t[0].isupper() and len(t) > 1 and low not in STOPWORDS):
                out.add(low)
    return out


def caption_nouns(text: str) -> set[str]:
    from veclip.rewrite.validate import content_words

    return {w for w in content_words(text) if not w.endswith("ing")}


def kept(words: set[str], vecap: str) -> float:
    have = {w.lower() for w in _TOKEN.findall(vecap or "")}
    return sum(w in have for w in words) / len(words)


def summarise(rows: list[dict]) -> dict:
    def share(key: str) -> dict:
        scored = [r[key] for r in rows if r[key] is not None]
        if not scored:
            return {"rows": 0}
        return {"rows": len(scored), "all": sum(s == 1.0 for s in scored) / len(scored),
                "any": sum(s > 0 for s in scored) / len(scored), "mean": sum(scored) / len(scored)}

    n = len(rows)
    return {"rows": n, "proper_nouns_kept": share("pn"), "caption_nouns_kept": share("cn"),
            "clip_tokens_mean": sum(r["clip_tokens"] for r in rows) / n if n else 0.0,
            "clip_tokens_max": max((r["clip_tokens"] for r in rows), default=0)}


def score(pairs, results) -> list[dict]:
    from veclip.rewrite.validate import clip_token_count

    rows = []
    for alt, cap, r in zip(pairs["alt_text"], pairs["caption"], results):
        pn, cn = proper_nouns(alt), caption_nouns(cap)
        rows.append({"alt_text": alt, "caption": cap, **r, "clip_tokens": clip_token_count(r["vecap"]),
                     "pn": kept(pn, r["vecap"]) if pn else None, "cn": kept(cn, r["vecap"]) if cn else None})
    return rows


def fmt(name: str, s: dict) -> str:
    def trio(d):
        return f"{d['all']:>6.1%} {d['any']:>6.1%} {d['mean']:>6.1%}" if d.get("rows") else f"{'-':>6} {'-':>6} {'-':>6}"
    return (f"{name:<10} {s['rows']:>5}  {trio(s['proper_nouns_kept'])}   {trio(s['caption_nouns_kept'])}   "
            f"{s['clip_tokens_mean']:>5.1f} {s['clip_tokens_max']:>4}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=1000, help="AltTexts to rewrite (default 1000)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--models", default=os.path.expanduser("~/.cache/veclip/models"))
    p.add_argument("--set", action="append", default=[], help="extra config overrides (e.g. rewrite.model=ID)")
    p.add_argument("--out", default=None, help="write every row and the summary as JSON here")
    a = p.parse_args(argv)

    from veclip.config import load_config
    from veclip.progress import Progress
    from veclip.rewrite.rewriter import RewriterLoader

    cfg = load_config(None, ["paths.root=/tmp/veclip-rewrite-quality", f"paths.models={a.models}",
                             f"rewrite.max_new_tokens={a.max_new_tokens}", *a.set], bare=True)
    pairs = stand_in_pairs(a.limit, seed=0)
    rw = RewriterLoader.from_config(cfg)("cpu")
    progress, results, t0 = Progress(len(pairs), "rewrite-quality", every_s=30), [], time.monotonic()
    for i in range(0, len(pairs), a.batch_size):
        chunk = pairs.iloc[i:i + a.batch_size]
        results.extend(rw.rewrite(list(chunk["alt_text"]), list(chunk["caption"])))
        progress.update(len(chunk))
    seconds = time.monotonic() - t0
    rows = score(pairs, results)
    groups = {"all": rows, "llm": [r for r in rows if not r["fallback_used"]],
              "fallback": [r for r in rows if r["fallback_used"]]}
    summary = {k: summarise(v) for k, v in groups.items()}
    reasons = Counter(r["reason"] for r in rows if r["fallback_used"])
    print(f"\n{len(rows)} real AltTexts (alttext-10k, seed 0) + stand-in captions (random COCO-mini), model "
          f"{cfg.rewrite.rewriter_id}, {a.max_new_tokens} new tokens max, {len(rows) / seconds:.2f} rows/s "
          f"({seconds:,.0f} s, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    print(f"fallback rate {len(groups['fallback']) / len(rows):.1%}: " +
          ", ".join(f"{k} {v}" for k, v in reasons.most_common()))
    print(f"\n{'':<10} {'rows':>5}  {'proper nouns kept':^20}   {'caption nouns kept':^20}   {'CLIP tokens':>10}")
    print(f"{'':<10} {'':>5}  {'all':>6} {'any':>6} {'mean':>6}   {'all':>6} {'any':>6} {'mean':>6}   {'mean':>5} {'max':>4}")
    for name, s in summary.items():
        print(fmt(name, s))
    print("\nexamples:")
    for r in rows[:8]:
        print(f"  alt:  {r['alt_text'][:100]!r}\n  cap:  {r['caption']!r}\n  -> {r['vecap']!r}"
              f"{'  [fallback: ' + r['reason'] + ']' if r['fallback_used'] else ''}\n")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump({"summary": summary, "fallback_reasons": dict(reasons), "rows_per_s": len(rows) / seconds,
                       "rows": rows}, f, indent=1)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
