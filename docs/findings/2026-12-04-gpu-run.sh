#!/bin/bash
# The GPU measurement of 2026-12-04 (issue 25), for the next session with a device.
# Prepare here, once (the wheels are those the device's image lacks; one dataset fits):
#   echo /.gpu/ >> .git/info/exclude; mkdir -p .gpu/whl .gpu/data/MNIST/raw
#   pip download --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d /tmp/all \
#     mlflow==3.17.2 optuna==5.1.0 scikit-posthocs==0.17.1
#   copy into .gpu/whl: alembic annotated_types blinker cachetools cffi colorlog cryptography
#     databricks_sdk docker fastapi flask flask_cors gitdb gitpython google_auth graphene
#     graphql_core graphql_relay gunicorn huey importlib_metadata itsdangerous mako mlflow-3
#     mlflow_skinny mlflow_tracing opentelemetry* optuna prettytable pyasn1* pycparser
#     pydantic* python_dotenv scikit_posthocs skops smmap sqlalchemy sqlparse starlette
#     typing_inspection uvicorn wcwidth (36 MB)
#   cp ../shared/data/MNIST/raw/*.gz .gpu/data/MNIST/raw/
#   cp docs/findings/2026-12-04-gpu-run.sh .gpu/run.sh
# Then one device call: carry [".gpu"], command `bash .gpu/run.sh`, with these knobs:
#   SMOKE_S, REAL_S (seconds), METHODS (default: all but vae-poisson), DATASETS, LABELS, SEEDS,
#   WORKERS. $OUT gets gpu.txt (versions, per-cell lines), the logs, runs.csv and the store.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl 2>/dev/null || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MPLBACKEND=Agg
export BENCHMARK_DATA_DIR=$PWD/.gpu/data
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $OUT/gpu.txt
python3 -c "import torch, numpy, sklearn; print(torch.__version__, numpy.__version__, sklearn.__version__, torch.cuda.is_available())" >> $OUT/gpu.txt 2>&1
rm -f results/runs.csv  # the published archive would count these cells as finished
ALL=$(python3 -m benchmark list 2>/dev/null | awk '/^methods:/{f=1;next} /^datasets:/{f=0} f{print $1}' | grep -v '^vae-poisson$' | paste -sd,)
M=${METHODS:-$ALL}; D=${DATASETS:-mnist}
echo "methods: $M" >> $OUT/gpu.txt
S() { echo "--tracking-uri sqlite:////tmp/$1/mlflow.db --storage sqlite:////tmp/$1/optuna.db --vae-cache-dir /tmp/$1/vae-cache --results-dir /tmp/$1/res"; }
mkdir -p /tmp/smoke /tmp/real
if [ "${SMOKE_S:-100}" -gt 0 ]; then
  timeout ${SMOKE_S:-100} python3 -m benchmark run --methods $M --datasets $D --labels 100 --seeds 0 \
    --subset 2000 --epochs 1 --workers 14 $(S smoke) > $OUT/smoke.log 2>&1
  n=$(($(cat /tmp/smoke/res/runs.csv 2>/dev/null | wc -l) - 1)); echo "smoke finished cells: $n" >> $OUT/gpu.txt
  [ "$n" -ge 1 ] || exit 4
fi
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -l 2 > $OUT/smi.csv &
start=$(date +%s)
timeout ${REAL_S:-300} python3 -m benchmark run --methods $M --datasets $D --labels ${LABELS:-100,600,1000,3000} \
  --seeds ${SEEDS:-0} --workers ${WORKERS:-14} $(S real) > $OUT/real.log 2>&1
echo "real rc=$? wall=$(( $(date +%s) - start )) s" >> $OUT/gpu.txt
cp /tmp/real/res/runs.csv $OUT/real-runs.csv 2>/dev/null
python3 - <<'PY' >> $OUT/gpu.txt 2>&1
import sqlite3
c = sqlite3.connect("/tmp/real/mlflow.db")
q = """select p.value, r.status, (coalesce(r.end_time, strftime('%s','now')*1000) - r.start_time)/1000.0,
  (select value from metrics m where m.run_uuid=r.run_uuid and m.key='cuda_peak_mb'),
  (select value from params q where q.run_uuid=r.run_uuid and q.key='n_labels')
  from runs r join params p on p.run_uuid=r.run_uuid and p.key='method' order by p.value"""
for row in c.execute(q):
    print("cell", *row)
PY
gzip -c /tmp/real/mlflow.db > $OUT/mlflow.db.gz
