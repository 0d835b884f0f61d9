#!/bin/bash
# GPU measurement of `run --methods all --seeds 0` on MNIST (issue 25). Run from the repo root.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MPLBACKEND=Agg
export BENCHMARK_DATA_DIR=$PWD/.gpu/data
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $OUT/gpu.txt
python3 -c "import torch, numpy, sklearn; print(torch.__version__, numpy.__version__, sklearn.__version__, torch.cuda.is_available())" >> $OUT/gpu.txt 2>&1
rm -f results/runs.csv
M=$(python3 -m benchmark list 2>/dev/null | awk '/^methods:/{f=1;next} /^datasets:/{f=0} f{print $1}' | grep -v '^vae-poisson$' | paste -sd,)
echo "methods: $M" >> $OUT/gpu.txt
S() { echo "--tracking-uri sqlite:////tmp/$1/mlflow.db --storage sqlite:////tmp/$1/optuna.db --vae-cache-dir /tmp/$1/vae-cache --results-dir /tmp/$1/res"; }
mkdir -p /tmp/smoke /tmp/real
timeout ${SMOKE_S:-100} python3 -m benchmark run --methods $M --datasets mnist --labels 100 --seeds 0 \
  --subset 2000 --epochs 1 --workers 14 $(S smoke) > $OUT/smoke.log 2>&1
echo "smoke rc=$?" >> $OUT/gpu.txt
cp /tmp/smoke/res/runs.csv $OUT/smoke-runs.csv 2>/dev/null
n=$(($(cat /tmp/smoke/res/runs.csv 2>/dev/null | wc -l) - 1)); echo "smoke finished cells: $n" >> $OUT/gpu.txt
[ "$n" -ge 5 ] || exit 4
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -l 2 > $OUT/smi.csv &
start=$(date +%s)
timeout ${REAL_S:-300} python3 -m benchmark run --methods $M --datasets mnist --labels ${LABELS:-100,600,1000,3000} \
  --seeds 0 --workers ${WORKERS:-14} $(S real) > $OUT/real.log 2>&1
echo "real rc=$? wall=$(( $(date +%s) - start )) s" >> $OUT/gpu.txt
cp /tmp/real/res/runs.csv $OUT/real-runs.csv 2>/dev/null
sqlite3 -version >/dev/null 2>&1; python3 - <<'PY' >> $OUT/gpu.txt 2>&1
import sqlite3
c = sqlite3.connect("/tmp/real/mlflow.db")
rows = c.execute("""select p.value, r.status, (coalesce(r.end_time, strftime('%s','now')*1000) - r.start_time)/1000.0,
  (select value from metrics m where m.run_uuid=r.run_uuid and m.key='cuda_peak_mb'),
  (select group_concat(value) from params q where q.run_uuid=r.run_uuid and q.key='n_labels')
  from runs r join params p on p.run_uuid=r.run_uuid and p.key='method' order by p.value""").fetchall()
for row in rows: print("cell", *row)
PY
gzip -c /tmp/real/mlflow.db > $OUT/mlflow.db.gz
