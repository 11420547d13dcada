#!/bin/bash
# Alternating A/B: the quickstart (3000 steps, eval/checkpoint only at the end) with the
# binary of the session's start (old) and of now (new), same pipeline file, same machine.
cd "$(dirname "$0")/.."
for round in 1 2 3 4 5 6; do
  for v in old new; do
    /tmp/ab/taskweave-$v -q run --overwrite pipelines/quickstart.toml --set run.name=ab-$v --set run.device=cpu \
      --set train.steps=3000 --set eval.every=3000 --set train.checkpoint_every=3000 > /dev/null 2>&1
    printf "%s %s %s\n" $round $v $(python3 -c "import json;print(round(json.load(open('runs/ab-$v/summary.json'))['steps_per_second']))")
  done
done
