"""make reproduce's bookkeeping: mean ± std over seeds, the results table, publishing into the README,
and refusing to mix arms made with other settings. (The runs themselves are the stages' own tests.)"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from veclip.demo import reproduce as rp


def _arm(rate, p, seed, top1, i2t):
    metrics = {"zeroshot_top1": top1, f"{rp.RETRIEVAL}/i2t_r1": i2t}
    return {"arm": rp.arm_name(rate, p, seed), "rate": rate, "p_vecap": p, "seed": seed, "metrics": metrics,
            "train_seconds": 60.0, "eval_seconds": 15.0}


def _pipeline(rate, rewritten, fallback):
    return {"rate": rate, "seconds": 600.0, "crawl": {"samples": 330},
            "counts": {"rewrite.rewritten": rewritten, "rewrite.fallback": fallback, "gold.rows": 300}}


ARMS = [_arm(0.1, 0.0, 0, 10.0, 2.0), _arm(0.1, 0.0, 1, 14.0, 4.0),
        _arm(0.1, 1.0, 0, 30.0, 8.0), _arm(0.1, 1.0, 1, 34.0, 12.0)]


def test_summary_is_mean_and_sample_std_over_seeds():
    summary = rp.summarise(rp.results_frame(ARMS)).set_index("p_vecap")
    assert summary.loc[0.0, "zeroshot_top1_mean"] == 12.0
    assert summary.loc[0.0, "zeroshot_top1_std"] == pytest.approx(2 ** 0.5 * 2)  # ddof=1 over 2 seeds
    assert summary.loc[1.0, f"{rp.RETRIEVAL}/i2t_r1_mean"] == 10.0
    assert list(summary["seeds"]) == [2, 2]


def test_markdown_rows_labels_data_and_compute():
    plan = rp.Plan(out="/tmp/x", rates=(0.1,), p_vecap=(0.0, 1.0), seeds=(0, 1))
    text = rp.markdown(rp.summarise(rp.results_frame(ARMS)), plan, [_pipeline(0.1, 90, 210)], ARMS)
    assert "| 10% | AltText only (CLIP) | 12.0 ± 2.8 | 3.0 ± 1.4 |" in text
    assert "| 10% | VeCap only | 32.0 ± 2.8 | 10.0 ± 2.8 |" in text
    assert "| 10% | 330 | 300 | 90 (30%) | 10 min |" in text  # the LLM wrote 90 of 300 VeCaps
    assert "4 arms 5 min" in text and "their numbers, not ours" in text


def test_publish_replaces_the_readme_block_and_copies_the_plot(tmp_path):
    out = tmp_path / "work" / "reproduce"
    out.mkdir(parents=True)
    (out / "results.png").write_bytes(b"\x89PNG fake")
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\nbefore\n{rp.README_START}\nold figures\n{rp.README_END}\nafter\n")
    plan = rp.Plan(out=str(out))
    for table in ("| first |", "| second |"):  # publishing twice leaves one block, the newer one
        rp.publish(plan, table, str(readme))
    doc = readme.read_text()
    assert doc.count(rp.README_START) == 1 and "| second |" in doc and "| first |" not in doc
    assert "old figures" not in doc and doc.startswith("# T\nbefore\n") and doc.endswith("\nafter\n")
    assert "From `make reproduce` (" in doc and f"![results]({rp.PUBLISHED_PLOT})" in doc
    assert (tmp_path / rp.PUBLISHED_PLOT).read_bytes() == b"\x89PNG fake"

    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="no <!-- reproduce-results:start -->"):
        rp.publish(plan, "| x |", str(readme))


def test_resuming_with_other_settings_is_refused(tmp_path):
    plan = rp.Plan(out=str(tmp_path), steps=250)
    rp.check_plan(plan)  # a new folder: fine
    (tmp_path / "plan.json").write_text(json.dumps({**plan.__dict__, "rates": [0.1]}))
    rp.check_plan(rp.Plan(out=str(tmp_path), steps=250, rates=(0.1, 0.5)))  # more rates or seeds: resumable
    with pytest.raises(SystemExit, match="steps: 250 -> 100"):
        rp.check_plan(rp.Plan(out=str(tmp_path), steps=100))


def test_the_published_command_names_every_non_default_setting():
    assert rp.plan_command(rp.Plan(out="/x")) == "make reproduce"
    assert rp.plan_command(rp.Plan(out="/x", rates=(0.1, 0.3, 0.6), steps=100)) == \
        'make reproduce REPRODUCE_ARGS="--rates 0.1,0.3,0.6 --steps 100"'


def test_the_arms_are_the_headline_mixes_caption_only_and_the_sweep():
    plan = rp.Plan(out="/x", rates=(0.1,), p_vecap=(0.0, 1.0), sweep_rate=0.5, sweep=(0.0, 0.5, 1.0), seeds=(0, 1))
    arms = rp.plan_arms(plan)
    assert plan.all_rates == (0.1, 0.5)
    assert [(r, t, p) for r, t, p, s in arms if s == 0] == [
        (0.1, "vecap", 0.0), (0.1, "vecap", 1.0), (0.1, "caption", 1.0),
        (0.5, "vecap", 0.0), (0.5, "vecap", 0.5), (0.5, "vecap", 1.0), (0.5, "caption", 1.0)]
    assert len(arms) == 14 and len({rp.arm_name(r, p, s, t) for r, t, p, s in arms}) == 14
    assert rp.arm_name(0.1, 1.0, 2, "caption") == "rate0.1_caption_seed2"
    assert rp.arm_name(0.1, 0.5, 2) == "rate0.1_p0.5_seed2"     # the names of finished arms are kept


TEXTS = pd.DataFrame({"key": [f"k{i}" for i in range(8)], "class_name": ["sneaker"] * 8,
                      "alt_text": ["Nike runners", "IMG_0001.jpg", "shop", None, "x", "y", "z", "w"],
                      "caption": ["a white sneaker"] * 7 + [None],
                      "vecap": ["v"] * 7 + [None],
                      "fallback_used": [False, True, True, False, True, False, True, None]})


def test_text_shares_follow_the_trainers_choice():
    alt = rp.text_shares(TEXTS, "vecap", 0.0, 0, 3)
    assert alt == {"fusion": 0.0, "fallback": 0.0, "caption": 0.0, "alt_text": 100.0}
    vecap = rp.text_shares(TEXTS, "vecap", 1.0, 0, 3)   # 7 VeCaps (3 fused, 4 fallbacks), 1 row AltText only
    assert vecap == {"fusion": pytest.approx(100 * 3 / 8, abs=0.1), "fallback": 50.0, "caption": 0.0,
                     "alt_text": pytest.approx(100 / 8, abs=0.1)}
    caption = rp.text_shares(TEXTS, "caption", 1.0, 0, 3)
    assert caption["caption"] == pytest.approx(100 * 7 / 8, abs=0.1) and caption["fusion"] == 0.0
    mix = rp.text_shares(TEXTS, "vecap", 0.5, 0, 200)
    assert 35 < mix["fusion"] + mix["fallback"] < 60 and sum(mix.values()) == pytest.approx(100, abs=0.2)


def test_probe_counts_find_the_held_out_names():
    counts = rp.probe_counts(TEXTS.assign(vecap=["Nike runners on black"] + ["v"] * 6 + [None]))
    assert counts == {"rows": 8, "alt_named": 1, "kept_fusion": 1, "kept_fallback": 0, "fusion_rows": 1}


def _probe_arm(rate, text, p, seed, top1, probe):
    arm = _arm(rate, p, seed, top1, 1.0)
    arm.update(text=text, arm=rp.arm_name(rate, p, seed, text),
               texts={"fusion": 30.0, "fallback": 60.0, "caption": 0.0, "alt_text": 10.0})
    arm["metrics"].update(probe_top1=probe, probe_chance=10.0)
    return arm


def test_the_paragraph_says_whether_vecap_beats_caption_only_on_the_probe():
    plan = rp.Plan(out="/x", rates=(0.1,), p_vecap=(1.0,), sweep_rate=0.1, sweep=(1.0,), seeds=(0, 1, 2))
    close = [_probe_arm(0.1, t, 1.0, s, 30.0, base + s) for s in range(3) for t, base in (("vecap", 11), ("caption", 10))]
    text = rp.markdown(rp.summarise(rp.results_frame(close)), plan)
    assert "| 10% | caption only (recaptioning) | 30.0 ± 0.0 | 11.0 ± 1.0 |" in text
    assert "| 30 / 60 / 0 / 10 |" in text
    assert "within seed noise" in text and "does not beat caption-only on the knowledge probe" in text
    apart = [_probe_arm(0.1, t, 1.0, s, 30.0, base + s) for s in range(3) for t, base in (("vecap", 20), ("caption", 10))]
    text = rp.markdown(rp.summarise(rp.results_frame(apart)), plan)
    assert "knowledge probe +10.0 points, standard error 0.8: beyond seed noise" in text
    assert "So VeCap beats caption-only on the knowledge probe beyond seed noise at 10% relevant AltTexts." in text


def test_the_plot_has_the_mix_sweep(tmp_path):
    arms = [_probe_arm(0.5, "vecap", p, s, 20 + 10 * p + s, 12 - 2 * p) for p in (0.0, 0.5, 1.0) for s in (0, 1)]
    arms += [_probe_arm(0.5, "caption", 1.0, s, 25.0, 10.0) for s in (0, 1)]
    plan = rp.Plan(out=str(tmp_path), rates=(0.5,), sweep_rate=0.5, sweep=(0.0, 0.5, 1.0), seeds=(0, 1))
    text = rp.write_results(plan, arms)
    assert "The mix sweep at 50% (p_vecap 0, 0.5, 1): zero-shot 20.5, 25.5, 30.5 (highest at p = 1)" in text
    assert (tmp_path / "results.png").stat().st_size > 10_000
