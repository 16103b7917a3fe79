#!/bin/bash
# Run on a GPU machine from the repo root: the weight-average path (recipe ema_decay, session 16) with --device cuda,
# on the repo's own sample films: the fast CNN in bf16 autocast and the binary net with its distillation teacher
# (resuming is checked on CPU by the tests), then evaluate of the GPU-trained model. Logs to $OUT.
set -u
export PYTHONPATH=$PWD/src HF_HUB_OFFLINE=1 CXRKIT_NO_REEXEC=1 PYTHONUNBUFFERED=1
D=src/cxrkit/sample_data/kermany_sample
nvidia-smi -L; python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.is_available())"
run() { local name=$1; shift; local t0=$(date +%s); timeout 150 "$@" > $OUT/$name.log 2>&1; echo "$name rc=$? $(( $(date +%s) - t0 )) s"; tail -2 $OUT/$name.log; }
run fast_ema python3 -m cxrkit train --recipe cxr_cnn_fast_ema --data $D --out /tmp/fast_ema --epochs 4 --device cuda --quiet
run bnn_ema python3 -m cxrkit train --recipe cxr_bnn_invariant48_ema --data $D --out /tmp/bnn_ema --epochs 3 --device cuda --quiet
run eval python3 -m cxrkit evaluate --model /tmp/fast_ema --data $D --json --quiet
python3 - <<'PY'
import json
for d in ("fast_ema", "bnn_ema"):
    try:
        h = json.load(open(f"/tmp/{d}/history.json")); r = json.load(open(f"/tmp/{d}/run.json"))
        print(d, [(e.get("epoch"), round(e["train_loss"], 4), round(e["val_loss"], 4), round(e["val_auc"], 4)) for e in h],
              {k: r.get(k) for k in ("device", "world_size", "precision")})
    except Exception as e:
        print(d, "missing", repr(e))
PY
