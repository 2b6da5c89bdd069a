import pytest

from veclip.config import ConfigError, flatten, load_config
from tests.conftest import REPO


def test_local_profile_loads_with_defaults(tmp_path):
    cfg = load_config(str(REPO / "conf" / "local.yaml"), [f"paths.root={tmp_path}"])
    assert cfg.paths.root == str(tmp_path)
    assert cfg.mlflow_tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert cfg.paths.models_dir == f"{tmp_path}/models"


def test_relative_root_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["paths.root=./work"])
    assert cfg.paths.root == str(tmp_path / "work")


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("ingest:\n  inptus: [a.tar]\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(f))
    assert "ingest.inptus" in str(e.value) and str(f) in str(e.value)


def test_unknown_key_in_override_is_named():
    with pytest.raises(ConfigError, match=r"unknown key 'spark.mastr'"):
        load_config(None, ["spark.mastr=local[1]"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"'ingest.min_side'"):
        load_config(None, ["ingest.min_side=big"])


def test_override_types_and_single_input():
    cfg = load_config(None, ["ingest.inputs=/data/*.tar", "ingest.http.retries=5", "mlflow.enabled=false"])
    assert cfg.ingest.inputs == ["/data/*.tar"]
    assert cfg.ingest.http.retries == 5
    assert cfg.mlflow.enabled is False
    cfg = load_config(None, ["ingest.inputs=[a.tar, b.tar]"])
    assert cfg.ingest.inputs == ["a.tar", "b.tar"]


def test_malformed_override_is_refused():
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(None, ["paths.root"])


def test_missing_file_is_clear():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nope/conf.yaml")


def test_flatten_gives_dotted_keys():
    flat = flatten(load_config(None))
    assert "ingest.http.timeout_s" in flat and "paths.root" in flat


@pytest.mark.parametrize("profile", sorted((REPO / "conf").glob("*.yaml")), ids=lambda p: p.name)
def test_every_profile_validates(profile):
    load_config(str(profile))
