#!/usr/bin/env bash
# Make the working tree fit the device tool's 64 MiB with kermany_224 beside it, and put it back afterwards.
#
#   experiments/gpu_tree.sh prepare   # then: run(command=..., carry=[".gpudata"])
#   experiments/gpu_tree.sh restore   # right after the call
#
# prepare copies ../shared/data/kermany_224 (42.7 MB) into .gpudata/ (ignored through .git/info/exclude) and deletes
# from the working tree what no GPU run reads: docs/reports (12.5 MB) and the shipped weights other than
# cxr_mobilenetv2 (the binary networks' distillation teacher) and cxr_cnn. restore brings them back from git.
# Commit everything first: restore checks out the committed files.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
case "${1:-}" in
  prepare)
    if [ -n "$(git status --porcelain)" ]; then echo "commit first: restore would lose uncommitted changes" >&2; exit 2; fi
    grep -qx '/.gpudata/' .git/info/exclude 2>/dev/null || echo '/.gpudata/' >> .git/info/exclude
    mkdir -p .gpudata && rm -rf .gpudata/kermany_224 && cp -r ../shared/data/kermany_224 .gpudata/
    rm -rf docs/reports
    find src/cxrkit/weights -type f \( -name '*.safetensors' -o -name '*.npz' -o -name '*.onnx' \) \
      ! -name cxr_mobilenetv2.safetensors ! -name cxr_cnn.safetensors -delete
    tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1 || true)  # deleted files: du fails
    data=$(du -sb .gpudata | cut -f1)
    echo "travels: $(( (tree + data) / 1048576 )) MiB of 64 (tree $(( tree / 1048576 )), data $(( data / 1048576 )))"
    ;;
  restore)
    git checkout -- docs/reports src/cxrkit/weights
    git status --short
    ;;
  *) echo "usage: $0 prepare|restore" >&2; exit 2 ;;
esac
