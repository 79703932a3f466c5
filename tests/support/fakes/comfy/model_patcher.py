"""Fake of `comfy.model_patcher`: a ModelPatcher that owns the devices of one nn.Module, no weight patches."""
from __future__ import annotations

from . import model_management


class ModelPatcher:
    """Stand-in for comfy.model_patcher.ModelPatcher: owns the devices of one nn.Module, no weight patches."""

    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False) -> None:
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.size = size
        self.weight_inplace_update = weight_inplace_update
        self.parent: ModelPatcher | None = None
        if getattr(model, "device", None) is None:  # ComfyUI tracks the module's device on the module
            model.device = offload_device
        if not hasattr(model, "model_loaded_weight_memory"):
            model.model_loaded_weight_memory = 0
        self.model_size()

    def model_size(self) -> int:
        if self.size <= 0:
            self.size = model_management.module_size(self.model)
        return self.size

    def loaded_size(self) -> int:
        return self.model.model_loaded_weight_memory

    def model_dtype(self):
        return self.model.get_dtype() if hasattr(self.model, "get_dtype") else None

    def current_loaded_device(self):
        return self.model.device

    def is_clone(self, other) -> bool:
        return getattr(other, "model", None) is self.model

    def clone(self) -> ModelPatcher:
        twin = self.__class__(self.model, self.load_device, self.offload_device, self.size,
                              weight_inplace_update=self.weight_inplace_update)
        twin.parent = self
        return twin

    def patch_model(self, device_to=None, lowvram_model_memory=0, load_weights=True, force_patch_weights=False):
        """Move the model to device_to (full load) and return it."""
        if load_weights and device_to is not None:
            self._move(device_to, self.model_size())
        return self.model

    def unpatch_model(self, device_to=None, unpatch_weights=True) -> None:
        if unpatch_weights and device_to is not None:
            self._move(device_to, 0)

    def detach(self, unpatch_all=True):
        """Send the model back to its offload device (what ComfyUI does when it frees memory)."""
        if unpatch_all:
            self.unpatch_model(self.offload_device, unpatch_weights=True)
        return self.model

    def _move(self, device, loaded_bytes: int) -> None:
        self.model.to(device)
        self.model.device = device
        self.model.model_loaded_weight_memory = loaded_bytes
