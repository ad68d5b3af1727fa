#!/usr/bin/env bash
# Wong et al.'s fast FGSM-AT on MNIST (at-mnist cpu's fgsm_at config), both FGSM starts x seeds 0-2,
# each evaluated like at-mnist's cpu profile; from the clean worktree /work/wt-fast.
cd /work/wt-fast
out=/work/wt-fast-out
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src
PY=/work/main/.venv/bin/python
echo "start $(date -u +%FT%TZ) sha $(git rev-parse HEAD) clean=$(test -z "$(git status --porcelain)" && echo yes || echo no) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $out/log
for seed in 0 1 2; do for start in unclipped clipped; do
  t0=$(date +%s)
  $PY -m advgeom train --config $out/$start.toml seed=$seed --root $out/runs --no-progress > $out/train-$start-$seed.txt 2>&1
  echo "train $start seed $seed rc $? $(( $(date +%s)-t0 )) s load $(cut -d' ' -f1-3 /proc/loadavg)" >> $out/log
  ck=$(ls -d $out/runs/train/*/ | while read d; do python3 -c "
import json,sys; c=json.load(open('$d/final.json'))['config']; sys.exit(0 if c['seed']==$seed and c['objective_kwargs'].get('start')=='$start' else 1)" 2>/dev/null && echo $d; done | head -1)
  t0=$(date +%s)
  $PY -m advgeom evaluate --checkpoint ${ck}final.safetensors --attacks "pgd:steps=40,step_size=0.01,pgd:steps=100,step_size=0.01,apgd-ce,apgd-t:num_targets=3" --eps 0.3 --n 1000 --root $out/eval --no-progress --no-strict > $out/eval-$start-$seed.txt 2>&1
  $PY -m advgeom evaluate --checkpoint ${ck}final.safetensors --suite standard --eps 0.3 --n 200 --root $out/eval --no-progress --no-strict > $out/suite-$start-$seed.txt 2>&1
  echo "eval $start seed $seed ($ck) rc $? $(( $(date +%s)-t0 )) s load $(cut -d' ' -f1-3 /proc/loadavg)" >> $out/log
done; done
echo "end $(date -u +%FT%TZ)" >> $out/log
