"""ComfyUI glue: the pack's V3 extension (comfy_entrypoint). No math lives here: nodes validate, call
comfyui_ppd, format."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .common import register_model_folder
from .depth import PPD_DepthSampler, PPD_SemanticEncoder
from .examples import copy_examples
from .geometry import PPD_LoadGeometryModel, PPD_MoGe2Geometry
from .metrics import PPD_EdgeMetricPreview
from .model import PPD_LoadModel
from .pointcloud import PPD_DepthToPointCloud, PPD_SavePointCloud
from .render import PPD_DepthRender, PPD_SaveDepth
from .tiled import PPD_TiledDepth
from .video import PPD_FlickerMetric, PPD_LoadVideoModel, PPD_VideoDepth

# Node ids never change (saved workflows refer to them); titles say "PPD" once.
NODES: list[type[io.ComfyNode]] = [
    PPD_LoadModel, PPD_SemanticEncoder, PPD_DepthSampler, PPD_DepthRender, PPD_SaveDepth, PPD_DepthToPointCloud,
    PPD_SavePointCloud, PPD_EdgeMetricPreview, PPD_LoadGeometryModel, PPD_MoGe2Geometry, PPD_LoadVideoModel,
    PPD_VideoDepth, PPD_FlickerMetric, PPD_TiledDepth,
]

register_model_folder()      # start-up chores, at import as every core since 0.3.64 imports the pack once
copy_examples()


class PPDExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
