"""Shared fixtures: one local Spark session with Delta for the whole run, per-test roots and configs,
and the real data under ../shared/data (tests that need it skip with a clear message when absent)."""

from __future__ import annotations

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("VECLIP_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_path(*parts: str) -> pathlib.Path:
    """A path under ../shared/data, or skip the test saying what is missing."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real test data not found: {p} (set VECLIP_SHARED_DATA to the shared/data folder)")
    return p


@pytest.fixture(scope="session")
def cc12m_shard() -> pathlib.Path:
    return shared_path("cc12m-sample", "cc12m-train-0000.tar")


@pytest.fixture
def make_cfg(tmp_path):
    """make_cfg(*overrides) -> Config rooted in this test's tmp dir, from conf/local.yaml."""
    from veclip.config import load_config

    def make(*overrides: str, root: pathlib.Path | None = None):
        base = [f"paths.root={root or tmp_path / 'root'}", "spark.master=local[2]", "spark.shuffle_partitions=2"]
        return load_config(str(REPO / "conf" / "local.yaml"), base + list(overrides))

    return make


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """One Spark session for the whole test run (starting one takes ~6 s)."""
    from veclip.config import load_config
    from veclip.spark import get_spark

    root = tmp_path_factory.mktemp("spark-root")
    cfg = load_config(str(REPO / "conf" / "local.yaml"),
                      [f"paths.root={root}", "spark.master=local[2]", "spark.shuffle_partitions=2",
                       "spark.driver_memory=3g"])
    session = get_spark(cfg)
    yield session
    session.stop()


@pytest.fixture
def tables(spark, make_cfg):
    from veclip.tables import Tables

    return Tables(make_cfg(), spark)
