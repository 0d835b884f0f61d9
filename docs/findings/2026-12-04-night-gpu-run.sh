#!/bin/bash
# The GPU script of 2026-12-04 (night; issue 25): both datasets in one call, under CUDA MPS.
# Prepare here, once (the wheel list is in 2026-12-04-gpu-run.sh's header, downloaded to W):
#   echo /.gpu2/ >> .git/info/exclude; mkdir -p .gpu2 /tmp/gpusite /tmp/gpudata/{MNIST,FashionMNIST}/raw
#   pip install -q --no-index --no-deps --target /tmp/gpusite --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --only-binary=:all: W/*.whl
#   (cd /tmp/gpusite && find . -name __pycache__ -prune -exec rm -rf {} + ; rm -rf mlflow/server/js
#    && tar -cf - . | xz -9 > $OLDPWD/.gpu2/site.tar.xz)                    # 14 MB
#   for d in MNIST FashionMNIST; do for f in ../shared/data/$d/raw/*.gz; do
#     gunzip -c $f > /tmp/gpudata/$d/raw/$(basename $f .gz); done; done
#   (cd /tmp/gpudata && tar -cf - . | xz -9 > $OLDPWD/.gpu2/data.tar.xz)    # 36 MB
#   cp docs/findings/2026-12-04-night-gpu-run.sh .gpu2/run.sh
# Then one device call: carry [".gpu2"], command `REAL_S=520 bash .gpu2/run.sh`; knobs: REAL_S,
# METHODS (default m2), DATASETS, LABELS, SEEDS, WORKERS, MPS (1: start the daemon).
set -u
t0=$(date +%s)
mkdir -p /tmp/site /tmp/data
tar -xJf .gpu2/site.tar.xz -C /tmp/site || exit 3
tar -xJf .gpu2/data.tar.xz -C /tmp/data || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MPLBACKEND=Agg
export BENCHMARK_DATA_DIR=/tmp/data
G=$OUT/gpu.txt
echo "unpacked in $(( $(date +%s) - t0 )) s" > $G
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> $G
if [ "${MPS:-1}" = 1 ]; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
  if nvidia-cuda-mps-control -d >> $G 2>&1 && timeout 90 bash -c 'for i in 1 2; do python3 -c "import torch; x = torch.randn(512, 512, device=\"cuda\"); print(\"mps ok\", (x @ x).sum().isfinite().item())" & done; wait' >> $G 2>&1 && [ $(grep -c "mps ok True" $G) = 2 ]; then
    echo "MPS on" >> $G
  else
    echo quit | nvidia-cuda-mps-control > /dev/null 2>&1; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    echo "MPS off (failed)" >> $G
  fi
fi
python3 -c "import torch, numpy, sklearn, mlflow, optuna; print(torch.__version__, numpy.__version__, sklearn.__version__, mlflow.__version__, optuna.__version__, torch.cuda.is_available())" >> $G 2>&1
R=/tmp/real; mkdir -p $R/res; cp results/runs.csv $R/res/  # the archive: its cells count as finished
snap() {  # what comes back even when the call is cut
  python3 - <<'PY'
import sqlite3, os
src = sqlite3.connect("/tmp/real/mlflow.db"); dst = sqlite3.connect(os.environ["OUT"] + "/mlflow.db")
src.backup(dst); dst.close(); src.close()
PY
  gzip -f $OUT/mlflow.db; cp $R/res/runs.csv $OUT/real-runs.csv 2>/dev/null
}
( while sleep 45; do snap 2>/dev/null; done ) &
SNAP=$!
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -l 5 > $OUT/smi.csv &
start=$(date +%s)
timeout ${REAL_S:-480} python3 -m benchmark run --methods ${METHODS:-m2} --datasets ${DATASETS:-mnist,fashion-mnist} \
  --labels ${LABELS:-100,600,1000,3000} --seeds ${SEEDS:-0,1,2} --workers ${WORKERS:-19} \
  --tracking-uri sqlite:///$R/mlflow.db --storage sqlite:///$R/optuna.db --vae-cache-dir $R/vae-cache \
  --results-dir $R/res > $OUT/real.log 2>&1
echo "real rc=$? wall=$(( $(date +%s) - start )) s" >> $G
kill $SNAP; snap
python3 - <<'PY' >> $G 2>&1
import sqlite3
c = sqlite3.connect("/tmp/real/mlflow.db")
q = """select p.value, r.status, (coalesce(r.end_time, strftime('%s','now')*1000) - r.start_time)/1000.0,
  (select value from metrics m where m.run_uuid=r.run_uuid and m.key='cuda_peak_mb'),
  (select value from params q where q.run_uuid=r.run_uuid and q.key='n_labels'),
  (select value from metrics m where m.run_uuid=r.run_uuid and m.key='test_accuracy')
  from runs r join params p on p.run_uuid=r.run_uuid and p.key='method' order by p.value"""
for row in c.execute(q):
    print("cell", *row)
PY
echo "total $(( $(date +%s) - t0 )) s" >> $G
