"""The stage registry against the stages themselves, and the `veclip` command line.

The declarations are checked on a real run: a small webdataset shard of real CC12M photos (plus a
re-crawled copy of one, for dedupe) goes through every stage in order (tiny random-weight captioner,
the real SmolLM2 rewriter, a few training steps, an evaluation of the checkpoint), each stage run
through `veclip.stages.run_reported` as a job runs it. Around each stage the test records which
Delta tables under the root changed version (or appeared) and which tables the stage read
(`Tables.read`, the one way a stage reads a table), and compares them with the stage's declaration.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import deltalake
import pytest

from tests.conftest import REPO, shared_path
from tests.test_rewrite_model import models_cache
from veclip import cli, stages
from veclip.tables import Tables


def table_versions(root) -> dict[str, int]:
    """Delta table name -> version, for every table under the root (not the runs' work tables)."""
    return {p.parent.name: deltalake.DeltaTable(str(p.parent)).version()
            for p in root.glob("*/_delta_log") if p.parent.name != "_work"}


def changed(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {name for name, version in after.items() if before.get(name) != version}


def small_crawl(path, cc12m_shard, n: int = 6):
    from tests.crawlgen import real_images, write_shard

    images = real_images(cc12m_shard)[:n]
    samples = [(f"s{i:03d}", {"jpg": jpeg, "txt": text.encode(), "json": json.dumps({"url": url}).encode()})
               for i, (url, text, jpeg) in enumerate(images)]
    url, text, jpeg = images[0]
    samples.append(("copy", {"jpg": jpeg, "txt": text.encode(),
                             "json": json.dumps({"url": "https://mirror.example.com/copy.jpg"}).encode()}))
    write_shard(path, samples)
    return path


@pytest.fixture(scope="module")
def observed(spark, cc12m_shard, tmp_path_factory):
    """Stage name -> (tables it read, tables it changed), for every stage of the registry, in order."""
    from veclip.caption.tiny import build_tiny_llava
    from veclip.config import load_config

    coco = shared_path("coco-mini")
    base = tmp_path_factory.mktemp("stages")
    root = base / "root"
    shard = small_crawl(base / "crawl.tar", cc12m_shard)
    checkpoints = base / "checkpoints"
    sets = [f"paths.root={root}", f"paths.models={models_cache()}", "mlflow.enabled=false",
            "spark.master=local[2]", "spark.shuffle_partitions=2", f"ingest.inputs=[{shard}]",
            f"caption.model={build_tiny_llava(str(base / 'tiny-llava'))}", "caption.max_new_tokens=8",
            "rewrite.max_new_tokens=12", "rewrite.partitions=1",
            "train.mode=single", "train.max_steps=2", "train.epochs=1", "train.batch_size=2",
            "train.warmup_steps=1", "train.checkpoint_every=2", "train.shuffle_buffer=0",
            f"train.checkpoint_dir={checkpoints}", "eval.max_images=8", "eval.batch_size=8", "eval.workers=1",
            f"eval.retrieval=[{{name: coco-mini, format: coco, path: {coco}/captions.json, "
            f"images_dir: {coco}/images}}]", "eval.zeroshot=[]", "eval.device=cpu"]
    cfg = load_config(str(REPO / "conf" / "local.yaml"), sets)
    reads: list[str] = []
    real_read = Tables.read

    def recording_read(self, name, version=None):
        reads.append(name)
        return real_read(self, name, version)

    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Tables, "read", recording_read)
        for stage in stages.STAGES:
            if stage.name == "evaluate":
                cfg = load_config(str(REPO / "conf" / "local.yaml"),
                                  sets + [f"eval.model={out['train'][2].details['final checkpoint']}"])
            before, reads[:] = table_versions(root), []
            report = stages.run_reported(stage, cfg, spark)   # as a job: lock, report, accounting check
            out[stage.name] = (set(reads), changed(before, table_versions(root)), report)
    return out


@pytest.mark.parametrize("name", stages.STAGE_NAMES)
def test_a_stage_touches_only_the_tables_it_declares(observed, name):
    stage = stages.get(name)
    read, written, _ = observed[name]
    assert written <= set(stage.writes), f"{name} wrote {written - set(stage.writes)} without declaring it"
    declared = set(stage.reads) | set(stage.reads_if_present)
    assert read <= declared, f"{name} read {read - declared} without declaring it"
    assert set(stage.reads) - {"crawl"} <= read, f"{name} declares reads it never made"


def test_the_chain_writes_what_its_stages_declare(observed):
    """The first run creates each stage's main output (so the declarations are not vacuous)."""
    assert observed["ingest"][1] >= {"bronze", "ingest_files"}
    assert observed["dedupe"][1] >= {"silver", "dedupe_audit"}
    assert observed["caption"][1] == {"captions"} and observed["rewrite"][1] == {"vecap"}
    assert "gold" in observed["gold"][1]
    assert observed["train"][0] == {"gold"} and observed["train"][1] == observed["evaluate"][1] == set()


def test_each_option_is_a_keyword_of_its_stage_function():
    for stage in stages.STAGES + (stages.PIPELINE,):
        params = inspect.signature(stage.function()).parameters
        for option in stage.options:
            p = params[option.name]
            assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default == option.default, (stage.name, option)


def test_the_jobs_are_the_job_scripts_and_the_chain_is_the_data_stages():
    assert sorted(stages.JOBS) == sorted(p.stem for p in (REPO / "jobs").glob("*.py"))
    assert stages.CHAIN_NAMES == ("ingest", "dedupe", "caption", "rewrite", "gold")
    assert [s.name for s in stages.STAGES if s.kind == stages.MODEL] == ["train", "evaluate"]
    for name in stages.JOBS:
        text = (REPO / "jobs" / f"{name}.py").read_text()
        assert f'main(["{name}", *sys.argv[1:]])' in text and "sys.path" not in text


def test_flags_are_made_from_the_options():
    p = cli.build_parser()
    ns = p.parse_args(["ingest", "--input", "a.tar", "--input", "b", "--retry-quarantined", "--set", "x.y=1"])
    assert cli.options_of(stages.JOBS["ingest"], ns) == {"inputs": ("a.tar", "b"), "retry_quarantined": True}
    assert ns.set == ["x.y=1"] and ns.config is None
    assert cli.options_of(stages.JOBS["ingest"], p.parse_args(["ingest"])) == {"inputs": (),
                                                                               "retry_quarantined": False}
    ns = p.parse_args(["rewrite", "--stages", "rewrite, gold", "--retry-errors"])
    assert cli.options_of(stages.PIPELINE, ns) == {"stages": ("rewrite", "gold"), "retry_errors": True,
                                                   "retry_quarantined": False}
    assert p.parse_args(["train", "--resume"]).resume and p.parse_args(["evaluate", "--promote"]).promote
    with pytest.raises(SystemExit) as e:
        p.parse_args(["rewrite", "--stages", "captoin"])
    assert e.value.code == 2


def test_help_lists_the_jobs_and_starts_no_jvm():
    code = ("import sys; from veclip.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('pyspark loaded' if 'pyspark' in sys.modules else 'no pyspark')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in stages.JOBS:
        assert f"    {name} " in out.stdout
    assert out.stdout.strip().endswith("no pyspark")


def test_python_m_veclip_refuses_a_bad_config_with_exit_code_2():
    proc = subprocess.run([sys.executable, "-m", "veclip", "ingest", "--config", "conf/local.yaml",
                           "--set", "ingest.min_sid=3"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown key 'ingest.min_sid'" in proc.stderr
