#!/usr/bin/env bash
# after run.sh: the at-mnist cpu run's first fgsm_at model (clipped start, seed 0, trained with 2 threads at 9600b3e), evaluated the same way
while pgrep -f wt-fast-out/run.sh > /dev/null; do sleep 10; done
cd /work/wt-fast
out=/work/wt-fast-out
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src
PY=/work/main/.venv/bin/python
mkdir -p $out/atmnist && cp /work/cpu-runs/runs/train/fast_at_mnist_net-a0d28d758201/final.* $out/atmnist/
ck=$out/atmnist/final.safetensors
t0=$(date +%s)
$PY -m advgeom evaluate --checkpoint $ck --attacks "pgd:steps=40,step_size=0.01,pgd:steps=100,step_size=0.01,apgd-ce,apgd-t:num_targets=3" --eps 0.3 --n 1000 --root $out/eval --no-progress --no-strict > $out/eval-clipped-0-2threads.txt 2>&1
$PY -m advgeom evaluate --checkpoint $ck --suite standard --eps 0.3 --n 200 --root $out/eval --no-progress --no-strict > $out/suite-clipped-0-2threads.txt 2>&1
echo "eval clipped seed 0 2 threads (a0d28d758201, at-mnist cpu at 9600b3e) rc $? $(( $(date +%s)-t0 )) s load $(cut -d' ' -f1-3 /proc/loadavg)" >> $out/log
echo "end2 $(date -u +%FT%TZ)" >> $out/log
