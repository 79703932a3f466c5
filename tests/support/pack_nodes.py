"""Calling the pack's V3 nodes by their ComfyUI ids, as ComfyUI does: `execute` on a class clone with the hidden
inputs set, the text a node shows captured from core's progress-text call."""
from __future__ import annotations

import asyncio


class Shown:
    """Stands in for ComfyUI's PromptServer.instance: records the progress texts nodes send."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def send_progress_text(self, text, node_id, sid=None) -> None:
        self.texts.append((text, node_id))

    def send_sync(self, *args, **kwargs) -> None:      # progress bar updates
        pass


class Output:
    """A node's result: iterate or index for the outputs, ["result"] for them as a tuple, ["ui"] for the UI dict
    plus the last text the node showed as "text", `texts` for every text it showed, `node_ui` for the node's own
    UI output."""

    def __init__(self, result: tuple, ui: dict | None, texts: list[str]) -> None:
        self.result = tuple(result or ())
        self.node_ui = dict(ui or {})             # what the node itself put in its UI output
        self.ui = dict(self.node_ui)
        if texts:
            self.ui["text"] = [texts[-1]]
        self.texts = texts

    def __getitem__(self, key):
        if key == "ui":
            return self.ui
        if key == "result":
            return self.result
        return self.result[key]

    def __iter__(self):
        return iter(self.result)

    def __len__(self) -> int:
        return len(self.result)


class NodeRef:
    """A V3 node class as the tests call it: `ref()` gives a runner whose every method runs `execute`; the V1-style
    attributes read the node's V1 info, which is what /object_info serves to the frontend."""

    V1 = {"CATEGORY": "category", "DESCRIPTION": "description", "RETURN_TYPES": "output",
          "RETURN_NAMES": "output_name", "OUTPUT_TOOLTIPS": "output_tooltips", "OUTPUT_NODE": "output_node"}

    def __init__(self, cls, prompt: dict | None = None) -> None:
        self.cls, self.prompt = cls, prompt
        self.info = cls.GET_NODE_INFO_V1()

    def INPUT_TYPES(self) -> dict:  # noqa: N802 (ComfyUI's name)
        """The inputs, dropdowns written the V1 way ([choices], options), as the frontend reads both."""
        def v1(spec):
            kind, *opts = spec
            if kind == "COMBO" and opts and "options" in opts[0]:
                return (list(opts[0]["options"]), {k: v for k, v in opts[0].items() if k != "options"})
            return spec
        return {section: {name: v1(spec) for name, spec in inputs.items()}
                for section, inputs in self.info["input"].items()}

    def VALIDATE_INPUTS(self, *args, **kwargs):  # noqa: N802
        return self.cls.validate_inputs(*args, **kwargs)

    def __getattr__(self, name):
        if name in self.V1:
            value = self.info[self.V1[name]]
            return tuple(value) if isinstance(value, list) else value
        raise AttributeError(name)

    def run(self, *args, **kwargs) -> Output:
        import server
        from comfy_api.latest import io
        hidden = io.HiddenHolder.from_dict({io.Hidden.unique_id: "ppd-test", io.Hidden.prompt: self.prompt})
        clone = type(self.cls.__name__, (self.cls,), {"hidden": hidden})
        shown, before = Shown(), getattr(server.PromptServer, "instance", None)
        server.PromptServer.instance = shown
        try:
            out = clone.execute(*args, **kwargs)
        finally:
            server.PromptServer.instance = before
        ui = out.ui if isinstance(out.ui, dict) or out.ui is None else out.ui.as_dict()
        return Output(out.args, ui, [t for t, _ in shown.texts])

    def __call__(self):
        ref = self

        class Runner:
            def __getattr__(self, _name):
                return ref.run

        return Runner()


def node_classes(pack, prompt: dict | None = None) -> dict[str, NodeRef]:
    """{node id: NodeRef} of every node the pack's comfy_entrypoint lists (`prompt`: the hidden prompt input)."""
    nodes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
    return {cls.GET_SCHEMA().node_id: NodeRef(cls, prompt) for cls in nodes}


def display_names(pack) -> dict[str, str]:
    return {node_id: ref.info["display_name"] for node_id, ref in node_classes(pack).items()}


def node(pack, name: str):
    """A runner for the node registered under `name`."""
    return node_classes(pack)[name]()


def load(pack, *args):
    """Load PPD Model's execute(*args)."""
    return node(pack, "PPD_LoadModel").load(*args)
