#!/usr/bin/env bash
# Every shipped workflow (and one saved by the previous release, tests/support/data/previous_release/) through a real,
# headless ComfyUI with tiny random checkpoints, via ../shared/tools/comfy_harness.py; on a core with MoGe and 3D
# nodes (0.27.0+), also a workflow chaining the pack's nodes with those (tests/support/data/core_types_027_api.json).
#   COMFY_DIR=<checkout> COMFY_PYTHON=<venv python> bash .ci/workflows.sh WORKDIR
# The ControlNet template also needs Stable Diffusion 1.5 and a depth ControlNet, which no tiny file replaces:
# it is expected to stop at those loaders' validation (--xfail) after its PPD part has been checked.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:?usage: workflows.sh WORKDIR}
name=${PPD_HARNESS_NAME:-comfyui-ppd}
mkdir -p "$work/models"
work=$(cd "$work" && pwd)
PYTHONPATH="$PWD:$PWD/tests/support" "$COMFY_PYTHON" - "$work/models" <<'PY'
import sys
from pathlib import Path
from tiny_models import write_tiny_models
from tiny_ppvd import write_tiny_ppvd
write_tiny_models(Path(sys.argv[1]))
write_tiny_ppvd(Path(sys.argv[1]))
PY
mkdir -p "$work/geometry"
printf 'ppd:\n  ppd: %s\n  geometry_estimation: %s\n' "$work/models" "$work/geometry" > "$work/extra_model_paths.yaml"
harness=${PPD_HARNESS:-../shared/tools/comfy_harness.py}
rm -rf "$work/run"
python3 "$harness" --pack "$PWD" --pack-name "$name" --isolate --workdir "$work/run" --replace-link \
  --extra-model-paths "$work/extra_model_paths.yaml" --input-dir example_inputs --require-outputs \
  --expect-node PPD_LoadModel --expect-node PPD_VideoDepth --expect-node PPD_MoGe2Geometry \
  --xfail workflows/ppd_controlnet_depth.json --timeout 600 \
  workflows/*.json tests/support/data/previous_release/*.json
# A fresh install without the models: the metric workflow must stop with the pack's own message (every missing
# file with its URL and target path), not core's "Value not in list".
mkdir -p "$work/empty"
printf 'ppd:\n  ppd: %s\n' "$work/empty" > "$work/empty_model_paths.yaml"
rm -rf "$work/run-empty"
python3 "$harness" --pack "$PWD" --pack-name "$name" --isolate --workdir "$work/run-empty" --replace-link \
  --extra-model-paths "$work/empty_model_paths.yaml" --input-dir example_inputs \
  --xfail workflows/ppd_metric_point_cloud.json workflows/ppd_metric_point_cloud.json | tee "$work/empty.log"
for want in "huggingface.co/Ruicheng/moge-2-vitl-normal" "ppd.pth" "depth_anything_v2_vitl.pth"; do
  grep -q "$want" "$work/empty.log" || { echo "workflows.sh: the missing-model message lacks $want" >&2; exit 1; }
done
if grep -q "Value not in list" "$work/empty.log"; then echo "workflows.sh: core's raw 'Value not in list'" >&2; exit 1; fi
# Core's MoGe and 3D nodes (ComfyUI 0.27.0+) chained with the pack's, both ways: a tiny MoGe-2 in core's layout in
# geometry_estimation feeds core's Load MoGe Model and the pack's loader. Core runs MoGe in the text encoder's dtype,
# fp16 on a CPU (no antialiased fp16 resize in torch), hence --fp32-text-enc for this run only.
core_wf=tests/support/data/core_types_027_api.json
core_nodes="LoadMoGeModel MoGeInference MoGeRender MoGePointMapToMesh PreviewPointCloud Preview3D SaveGLB"
missing=$(for n in $core_nodes; do grep -rqs "\"$n\"" "$COMFY_DIR/comfy_extras" || printf ' %s' "$n"; done)
if [ -n "$missing" ]; then
  echo "workflows.sh: SKIP $core_wf: this ComfyUI lacks core nodes:$missing (they came in 0.27.0)"
else
  PYTHONPATH="$COMFY_DIR:$PWD:$PWD/tests/support" "$COMFY_PYTHON" - "$work/geometry/moge_2_tiny_core.safetensors" <<'PY'
import sys
import comfy.cli_args
comfy.cli_args.args.cpu = True                     # built on the CPU, whatever the machine has
import comfy.ldm.moge.model as model_py  # noqa: E402
from safetensors.torch import save_file
from tiny_core_moge import core_moge2
save_file({k: v.contiguous() for k, v in core_moge2(model_py).state_dict().items()}, sys.argv[1])
PY
  rm -rf "$work/run-core"
  python3 "$harness" --pack "$PWD" --pack-name "$name" --isolate --workdir "$work/run-core" --replace-link \
    --extra-model-paths "$work/extra_model_paths.yaml" --input-dir example_inputs --require-outputs \
    $(printf -- ' --expect-node %s' $core_nodes) --comfy-arg=--fp32-text-enc --timeout 600 "$core_wf"
fi
