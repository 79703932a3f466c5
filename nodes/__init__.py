"""ComfyUI glue: NODE_CLASS_MAPPINGS for the pack. No math lives here: nodes validate, call comfyui_ppd, format."""
from .depth import PPD_DepthSampler, PPD_SemanticEncoder
from .examples import copy_examples
from .geometry import PPD_LoadGeometryModel, PPD_MoGe2Geometry
from .metrics import PPD_EdgeMetricPreview
from .model import PPD_LoadModel, register_model_folder
from .pointcloud import PPD_DepthToPointCloud, PPD_SavePointCloud
from .render import PPD_DepthRender, PPD_SaveDepth
from .video import PPD_FlickerMetric, PPD_LoadVideoModel, PPD_VideoDepth

register_model_folder()
copy_examples()

NODE_CLASS_MAPPINGS = {
    "PPD_LoadModel": PPD_LoadModel,
    "PPD_SemanticEncoder": PPD_SemanticEncoder,
    "PPD_DepthSampler": PPD_DepthSampler,
    "PPD_DepthRender": PPD_DepthRender,
    "PPD_SaveDepth": PPD_SaveDepth,
    "PPD_DepthToPointCloud": PPD_DepthToPointCloud,
    "PPD_SavePointCloud": PPD_SavePointCloud,
    "PPD_EdgeMetricPreview": PPD_EdgeMetricPreview,
    "PPD_LoadGeometryModel": PPD_LoadGeometryModel,
    "PPD_MoGe2Geometry": PPD_MoGe2Geometry,
    "PPD_LoadVideoModel": PPD_LoadVideoModel,
    "PPD_VideoDepth": PPD_VideoDepth,
    "PPD_FlickerMetric": PPD_FlickerMetric,
}
# Titles say "PPD" once; the keys above never change (saved workflows refer to them).
NODE_DISPLAY_NAME_MAPPINGS = {
    "PPD_LoadModel": "Load PPD Model",
    "PPD_SemanticEncoder": "PPD Semantic Encoder",
    "PPD_DepthSampler": "PPD Depth Sampler",
    "PPD_DepthRender": "PPD Depth Render",
    "PPD_SaveDepth": "Save PPD Depth",
    "PPD_DepthToPointCloud": "PPD Depth to Point Cloud",
    "PPD_SavePointCloud": "Save Point Cloud (PPD)",
    "PPD_EdgeMetricPreview": "PPD Edge Metric Preview",
    "PPD_LoadGeometryModel": "Load PPD MoGe-2 Geometry Model",
    "PPD_MoGe2Geometry": "PPD MoGe-2 Geometry",
    "PPD_LoadVideoModel": "Load PPD Video Model",
    "PPD_VideoDepth": "PPD Video Depth",
    "PPD_FlickerMetric": "PPD Flicker Metric",
}
