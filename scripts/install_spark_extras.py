"""Give the pyspark of the Python that runs this script Delta Lake's JVM jars and local defaults.

    .venv/bin/python scripts/install_spark_extras.py [--delta 4.4.0] [--cache ~/.cache/veclip]

Used by scripts/setup.sh (each checkout's .venv) and tests/test_packaging.py (a fresh environment).

Delta jars (by default the version of the installed delta-spark package: the Python and JVM halves
are kept at the same version, pinned in requirements.txt): spark.jars.packages resolves jars when a Python process starts the JVM, which is too late
for spark-submit (its JVM is already up) and needs the network at run time. Copying the jars into
pyspark's own jars/ folder puts them on every JVM's classpath, offline. The first run on a machine
resolves them with Ivy (through spark-submit --packages, network needed) and keeps the chosen set in
<cache>/delta-jars/<delta>-pyspark<version>/; later runs copy from there, offline.

Local defaults (pyspark/conf/): bind to loopback unless SPARK_LOCAL_IP says otherwise, WARN logs.
Files are replaced, never written in place: the installed packages may be hard links into uv's cache.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata

SPARK_ENV = 'export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"\n'
LOG4J2 = """rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
logger.netutils.name = org.apache.spark.util.Utils
logger.netutils.level = error
logger.nativecode.name = org.apache.hadoop.util.NativeCodeLoader
logger.nativecode.level = error
"""


def say(msg: str) -> None:
    print(f"[setup] {msg}", file=sys.stderr)


def artifact_of(jar: str) -> str:
    """'zstd-jni-1.5.7-3.jar' -> 'zstd-jni'."""
    return re.match(r"(.+?)-\d", jar).group(1)


def resolve_with_ivy(spark_minor: str, delta: str, ivy: str, jars_dir: str) -> list[str]:
    """Fetch Delta for this Spark line with Ivy; the jars Spark does not already ship, as paths."""
    # Delta publishes one artifact per Spark line (delta-spark_<spark>_2.13); older releases used
    # delta-spark_2.13. Try the specific name first.
    candidates = [f"io.delta:delta-spark_{spark_minor}_2.13:{delta}", f"io.delta:delta-spark_2.13:{delta}"]
    spark_submit = os.path.join(os.path.dirname(sys.executable), "spark-submit")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as probe:
        probe.write("from pyspark.sql import SparkSession\nSparkSession.builder.getOrCreate().stop()\n")
    have = {artifact_of(j) for j in os.listdir(jars_dir) if j.endswith(".jar")}
    for coord in candidates:
        res = subprocess.run([spark_submit, "--master", "local[1]", "--packages", coord,
                              "--conf", f"spark.jars.ivy={ivy}", probe.name], capture_output=True, text=True)
        artifact = coord.split(":")[1]
        found = sorted(glob.glob(os.path.join(ivy, "jars", "*.jar")))
        if res.returncode == 0 and any(artifact in os.path.basename(f) for f in found):
            # Ivy names them <group>_<artifact>-<version>.jar. Spark already ships its own versions of
            # shared dependencies (hadoop, jackson, zstd, ...): a second version of a class on the
            # classpath is worse than a slightly older one.
            return [f for f in found if artifact_of(os.path.basename(f).split("_", 1)[1]) not in have]
        say(f"{coord} not usable:\n{res.stderr[-2000:]}")
    sys.exit("[setup] could not fetch the Delta Lake jars")


def cached_jars(delta: str, cache: str, jars_dir: str) -> str:
    """The folder holding this Delta version's jars for this pyspark, filled on first use."""
    import pyspark

    folder = os.path.join(cache, "delta-jars", f"{delta}-pyspark{pyspark.__version__}")
    if os.path.isdir(folder):
        return folder
    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    say(f"fetching Delta {delta} jars for Spark {spark_minor}")
    chosen = resolve_with_ivy(spark_minor, delta, os.path.join(cache, "ivy"), jars_dir)
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(folder))
    for f in chosen:
        shutil.copy(f, os.path.join(tmp, os.path.basename(f).split("_", 1)[1]))
    try:
        os.rename(tmp, folder)  # complete or absent: a killed run leaves no half-filled folder
    except OSError:  # another installer finished first; its set is the same
        shutil.rmtree(tmp)
    return folder


def replace(path: str, text: str) -> None:
    """Write `path` as a new file (a hard link to a cached file is unlinked, not overwritten)."""
    if os.path.lexists(path):
        os.remove(path)
    with open(path, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> None:
    import pyspark

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--delta", default=metadata.version("delta-spark"),
                   help="Delta Lake version (default: the installed delta-spark's)")
    p.add_argument("--cache", default=os.environ.get("VECLIP_ENV_HOME", os.path.expanduser("~/.cache/veclip")),
                   help="machine-wide cache folder for Ivy and the chosen jars (default: $VECLIP_ENV_HOME "
                        "or ~/.cache/veclip)")
    a = p.parse_args(argv)
    home = os.path.dirname(pyspark.__file__)
    jars_dir = os.path.join(home, "jars")
    folder = cached_jars(a.delta, a.cache, jars_dir)
    for f in sorted(os.listdir(folder)):
        target = os.path.join(jars_dir, f)
        if not os.path.exists(target):
            shutil.copy(os.path.join(folder, f), target)
            say(f"installed {f}")
    conf = os.path.join(home, "conf")
    os.makedirs(conf, exist_ok=True)
    replace(os.path.join(conf, "spark-env.sh"), SPARK_ENV)
    replace(os.path.join(conf, "log4j2.properties"), LOG4J2)


if __name__ == "__main__":
    main()
