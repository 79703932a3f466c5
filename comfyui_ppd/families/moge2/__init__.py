"""MoGe-2 geometry: metric points, depth, mask, camera and normals; the official metric point-cloud chain."""
from .load import EXPECTED, FIX, MoGe2GeometryFamily, moge2_config
from .metric import (
    OUTLIER_FILTERS,
    align_to_metric,
    fit_log_depth,
    intrinsics_to_pixels,
    metric_point_cloud,
    metric_points,
    statistical_outlier_filter,
    unproject_pixels,
    window_outlier_filter,
)
from .model import MoGe2Model, token_grid

__all__ = ["EXPECTED", "FIX", "OUTLIER_FILTERS", "MoGe2GeometryFamily", "MoGe2Model", "align_to_metric",
           "fit_log_depth", "intrinsics_to_pixels", "metric_point_cloud", "metric_points",
           "moge2_config",
           "statistical_outlier_filter", "token_grid", "unproject_pixels", "window_outlier_filter"]
