"""make reproduce's bookkeeping: mean ± std over seeds, the results table, publishing into the README,
and refusing to mix arms made with other settings. (The runs themselves are the stages' own tests.)"""

from __future__ import annotations

import json

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
