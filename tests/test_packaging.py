"""veclip as users install it: the wheel `make wheel` builds, in a fresh environment with the pinned stack,
run from a directory outside the checkout.

The fresh environment is built as scripts/setup.sh builds one (uv from its warm cache, offline: the
pinned stack of requirements.txt with overrides.txt, then the Delta jars through
scripts/install_spark_extras.py), then the wheel is installed with its declared dependencies, which
the pinned stack must already satisfy. Nothing points at the checkout: no PYTHONPATH, another working
directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

UV = os.path.join(os.path.dirname(sys.executable), "uv")


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900, **kw)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out


def _clean_env(venv) -> dict:
    """The user's shell with the fresh environment active: no PYTHONPATH, its bin/ first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYSPARK_PYTHON",
                                                            "PYSPARK_DRIVER_PYTHON")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel, built by the command `make wheel` runs (offline, with the environment's setuptools)."""
    dist = tmp_path_factory.mktemp("dist")
    _run([UV, "build", "--wheel", "--no-build-isolation", "--python", sys.executable, "--out-dir", dist],
         cwd=REPO)
    [whl] = dist.glob("*.whl")
    return whl


@pytest.fixture(scope="module")
def fresh(wheel, tmp_path_factory):
    """A new virtual environment: the pinned stack, the Delta jars, then the wheel."""
    venv = tmp_path_factory.mktemp("fresh") / "env"
    py = venv / "bin" / "python"
    _run([UV, "venv", "--python", sys.executable, venv])
    _run([UV, "pip", "install", "--offline", "--python", py,
          "-r", REPO / "requirements.txt", "--override", REPO / "overrides.txt"])
    _run([py, REPO / "scripts" / "install_spark_extras.py"], env=_clean_env(venv))
    _run([UV, "pip", "install", "--offline", "--python", py, wheel])  # its dependencies: already there
    return venv


def test_the_wheel_holds_the_package_its_data_and_the_entry_point(wheel):
    import zipfile

    assert wheel.name == "veclip-0.1.0-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("veclip/__init__.py", "veclip/conf/local.yaml", "veclip/conf/prompts/vecap_fusion_v1.yaml",
              "veclip/clip_configs/veclip-tiny.json"):
        assert f in names, f
    assert not any(n.startswith(("tests/", "jobs/", "conf/")) for n in names)
    [ep] = [n for n in names if n.endswith("entry_points.txt")]
    assert "veclip = veclip.cli:main" in zipfile.ZipFile(wheel).read(ep).decode()


def test_installed_wheel_imports_its_own_copy_and_finds_profile_and_prompt(fresh, tmp_path):
    code = ("import json, veclip, veclip.config as c; from veclip.rewrite.prompt import resolve_prompt_file; "
            "cfg = c.load_config(None); print(json.dumps([veclip.__file__, c.LOCAL_PROFILE, "
            "resolve_prompt_file(cfg.rewrite.prompt_file), cfg.train.model]))")
    out = _run([fresh / "bin" / "python", "-c", code], cwd=tmp_path, env=_clean_env(fresh))
    module, profile, prompt, model = json.loads(out.stdout.strip().splitlines()[-1])
    site = str(fresh / "lib")
    assert module.startswith(site) and profile.startswith(site) and prompt.startswith(site)
    assert prompt.endswith("veclip/conf/prompts/vecap_fusion_v1.yaml")
    assert model == "veclip-tiny"  # the embedded local profile, not the code's defaults (ViT-B-16)


def test_python_m_veclip_ingest_from_outside_the_checkout(fresh, cc12m_shard, tmp_path):
    import deltalake

    root = tmp_path / "root"
    out = _run([fresh / "bin" / "python", "-m", "veclip", "ingest", "--set", f"paths.root={root}",
                "--set", f"ingest.inputs={cc12m_shard}", "--set", "spark.driver_memory=2g",
                "--set", "spark.shuffle_partitions=2"], cwd=tmp_path, env=_clean_env(fresh))
    with tarfile.open(cc12m_shard) as tf:
        samples = sum(1 for m in tf.getmembers() if m.name.endswith(".json"))
    assert samples == 32
    assert f"bronze                      {samples}" in out.stdout, out.stdout
    assert len(deltalake.DeltaTable(str(root / "bronze")).to_pandas()) == samples
