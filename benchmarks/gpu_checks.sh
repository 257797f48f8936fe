#!/usr/bin/env bash
# The GPU checks the issues ask for, as ONE prepared script (about 14 minutes on one GPU,
# including the virtualenv): run it from the repository root on a machine with a GPU.
#
#   bash benchmarks/gpu_checks.sh                 # writes outputs/gpu_checks/*.txt and a run dir
#   OUT=/some/dir TRAIN_MINUTES=4 bash benchmarks/gpu_checks.sh
#
# 1. the optimizer overhead benchmark at 224 px in bf16 (AdamW, SAM, ASAM, LookSAM, ImbSAM, EMA);
# 2. the dermoscopy augmentation on the GPU at 224 px, against a ResNet-50 bf16 step;
# 3. images/s and peak memory of the GPU recipe (SAM+EMA) and of plain AdamW in the same recipe;
#    then the throughput table of issue 17 at 224 px (AdamW+EMA, EfficientNet-B0): images/s,
#    GFLOP/s and share of the matmul peak measured in the same run, fp32 vs bf16 autocast, NCHW
#    vs channels_last, 3 interleaved rounds (about 2 minutes; torch.compile left out: its build
#    per round would cost more than the table);
# 4. a short SAM+EMA training run of experiment=ham10000_gpu from scratch, stopped by
#    trainer.max_time, then tested as usual (macro-F1 with CIs in its metrics.json).
# The real HAM10000 is read from $DERMLIT_DATA/ham10000-200x150 (default ../shared/data); when it
# is absent, step 4 trains on the embedded synthetic set and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_checks}
TRAIN_MINUTES=${TRAIN_MINUTES:-5}
mkdir -p "$OUT"
make install >"$OUT/install.log" 2>&1
PY=.venv/bin/python
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"

$PY benchmarks/optim_overhead.py --accelerator gpu --image-size 224 --batch-size 64 \
  --precision bf16-mixed --rounds 5 --cycles 2 | tee "$OUT/optim_overhead.txt"
$PY benchmarks/augment_throughput.py --device cuda --sizes 224 | tee "$OUT/augment_throughput.txt"
for overrides in "" "optim=adamw callbacks=default"; do
  # shellcheck disable=SC2086  # the overrides are separate words
  $PY benchmarks/train_throughput.py experiment=ham10000_gpu $overrides --steps 200 \
    --warmup 20 --rounds 1 | tee -a "$OUT/train_throughput.txt"
done
$PY benchmarks/train_throughput.py experiment=ham10000_gpu optim=adamw \
  --variants fp32+cl bf16 bf16+cl --rounds 3 --steps 20 --warmup 5 --peak-sizes 4096 8192 \
  --json "$OUT/train_throughput_table.json" --markdown "$OUT/train_throughput_table.md" \
  | tail -n 20 | tee "$OUT/train_throughput_table.txt"

DATA_DIR=${DERMLIT_DATA:-../shared/data}
if [ -f "$DATA_DIR/ham10000-200x150/HAM10000_metadata.csv" ]; then
  DATA=()
else
  echo "HAM10000 not found under $DATA_DIR: the short run trains on the synthetic set" \
    | tee "$OUT/data.txt"
  DATA=(data=synthetic)
fi
.venv/bin/dermlit-train experiment=ham10000_gpu "${DATA[@]}" \
  "+trainer.max_time=00:00:${TRAIN_MINUTES}:00" "hydra.run.dir=$OUT/ham10000_gpu_short" \
  2>&1 | tail -n 60 | tee "$OUT/train_short.txt"
