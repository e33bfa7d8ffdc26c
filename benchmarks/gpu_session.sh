#!/usr/bin/env bash
# The GPU checks of the throughput and scale-out work as one prepared command, for a
# machine with one CUDA GPU and no network (run from the repository root):
#
#   bash benchmarks/gpu_session.sh OUT_DIR
#
# Needs: torch with CUDA, torch-geometric, e3nn, h5py, pyyaml there; ase and hippynn 0.1.3
# (the `bench` extra) installed or carried as wheels in .whl/ (installed into /tmp/site);
# the shared data in $MFGNN_SHARED_DATA (H2CO mp2_ccsdt/ and rmd17/ aspirin are enough),
# else ../shared/data. Every step has its own time limit (about 8 minutes in all) and
# writes its output to OUT_DIR:
#   1. vs_hippynn.txt        train step, one molecule, clusters, throughput against batch
#                            size and peak memory per atom, mfgnn against hippynn's Triton
#                            kernels (benchmarks/vs_hippynn.py)
#   2. train_throughput.txt  `mfgnn train` seconds per epoch on H2CO and aspirin, CPU and
#                            GPU, against the model steps (benchmarks/train_throughput.py)
#   3. torchrun_nccl.txt     a 1-GPU run under torchrun (NCCL process group), time per step
#   4. scale.txt             benchmarks/scale.py on 1 M synthetic conformers: pack, loader,
#                            200 training steps on the GPU with utilisation
set -uo pipefail
out=${1:-gpu_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"

timeout 180 python3 benchmarks/vs_hippynn.py --threads 8 2>&1 | tee "$out/vs_hippynn.txt"
timeout 120 python3 benchmarks/train_throughput.py --quick --threads 8 2>&1 \
    | tee "$out/train_throughput.txt"

# 3. one GPU under torchrun: H2CO MP2 E+F / F12 E, 1000 train + 200 valid, batch 64
data=${MFGNN_SHARED_DATA:-../shared/data}/mp2_ccsdt
cat > /tmp/h2co_run.yaml <<EOF
data:
  fidelities:
    mp2: {path: $data/ch2o_mp2_avtz_3601.npz, energy_unit: eV}
    f12: {path: $data/ch2o_ccf12_avtz_3601.npz, energy_unit: eV}
labels: {mp2: [energy, forces], f12: [energy]}
split: {train: 1000, valid: 200, test: 200, seed: 0}
train: {max_epochs: 20, batch_size: 64, device: cuda, patience: null, progress_every: 0}
EOF
rm -rf /tmp/h2co_nccl
timeout 120 python3 -m torch.distributed.run --standalone --nproc_per_node=1 \
    -m mfgnn train /tmp/h2co_run.yaml --out /tmp/h2co_nccl 2>&1 | tail -5 | tee "$out/torchrun_nccl.txt"
python3 - <<'EOF' 2>&1 | tee -a "$out/torchrun_nccl.txt"
import csv
rows = list(csv.DictReader(open("/tmp/h2co_nccl/metrics.csv")))
steady = sorted(float(r["seconds"]) for r in rows[2:])
print(f"{len(rows)} epochs; median steady epoch {steady[len(steady) // 2]:.3f} s "
      f"({steady[len(steady) // 2] / 16 * 1e3:.1f} ms per step of 64, validation included)")
EOF

timeout 170 python3 benchmarks/scale.py --n-conformers 1000000 --no-torchrun 2>&1 \
    | tee "$out/scale.txt"
