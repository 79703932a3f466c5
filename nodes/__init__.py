"""ComfyUI glue: NODE_CLASS_MAPPINGS for the pack. No math lives here."""
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
