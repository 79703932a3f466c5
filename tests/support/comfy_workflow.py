"""Workflow tools for tests: UI-format -> API-format conversion (the frontend's graphToPrompt rules),
a wiring checker, and a tiny executor for classic node classes. ComfyUI itself is not needed.

Conversion rules follow ComfyUI frontend 1.27.10 (`utils/executionUtil.ts`, `ExecutableNodeDTO.ts`,
`services/litegraphService.ts`, `scripts/widgets.ts`, `extensions/core/*.ts`); see
../shared/notes/comfyui_reference.md section 13. Subgraphs and group nodes are not supported.
"""
from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CORE_NODES_JSON = Path(__file__).resolve().parent / "data" / "core_nodes.json"

MUTED, BYPASSED = 2, 4  # LiteGraph node modes (0 = always)
VIRTUAL_TYPES = {"Reroute", "PrimitiveNode", "Note", "MarkdownNote"}  # frontend-only nodes
# input types the frontend draws as widgets (scripts/widgets.ts ComfyWidgets + core extensions)
WIDGET_TYPES = {"INT", "FLOAT", "BOOLEAN", "STRING", "MARKDOWN", "COMBO", "IMAGEUPLOAD", "FILEUPLOAD", "COLOR",
                "IMAGECOMPARE", "TREESELECT", "MULTISELECT", "CHART", "GALLERIA", "SELECTBUTTON", "TEXTAREA",
                "LOAD_3D", "LOAD_3D_ANIMATION", "PREVIEW_3D", "PREVIEW_3D_ANIMATION", "AUDIO_UI", "AUDIOUPLOAD",
                "AUDIO_RECORD", "WEBCAM"}
# widgets that core extensions append to `required` (after every input in input_order); never sent
EXTENSION_WIDGETS = {"Preview3D": ("image", "PREVIEW_3D"), "SaveGLB": ("image", "PREVIEW_3D"),
                     "Preview3DAnimation": ("image", "PREVIEW_3D_ANIMATION")}
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload")
HIDDEN_VALUES = {"UNIQUE_ID", "PROMPT", "EXTRA_PNGINFO", "DYNPROMPT"}


class WorkflowError(ValueError):
    """A workflow that cannot be converted or run; the message names the node and the problem."""


# --------------------------------------------------------------------------- node definitions


def load_core_node_defs() -> dict:
    """The /object_info entries of the core nodes our workflows use (captured from ComfyUI 0.3.64)."""
    data = json.loads(CORE_NODES_JSON.read_text(encoding="utf-8"))
    return {name: d for name, d in data.items() if not name.startswith("_")}


def node_defs_from_classes(node_class_mappings: dict, display_names: dict | None = None) -> dict:
    """/object_info-shaped definitions of classic node classes (as ComfyUI's server builds them),
    merged over the core node definitions."""
    defs = load_core_node_defs()
    for name, cls in node_class_mappings.items():
        types = _jsonish(cls.INPUT_TYPES())
        returns = list(getattr(cls, "RETURN_TYPES", ()))
        defs[name] = {
            "input": types,
            "input_order": {key: list(value) for key, value in types.items()},
            "output": _jsonish(returns),
            "output_name": list(getattr(cls, "RETURN_NAMES", returns)),
            "name": name,
            "display_name": (display_names or {}).get(name, name),
            "category": getattr(cls, "CATEGORY", "sd"),
            "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
        }
    return defs


def _jsonish(value):
    """Tuples become lists, as they do on their way through /object_info."""
    if isinstance(value, dict):
        return {k: _jsonish(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonish(v) for v in value]
    return value


@dataclass
class _Spec:
    name: str
    type: Any               # a type string, or the list of combo options
    options: dict
    optional: bool
    frontend_only: bool = False  # added by a core extension; its widget is never sent


def _ordered_specs(node_def: dict, use_input_order: bool = True) -> list[_Spec]:
    """Inputs in the frontend's widget order: input_order required, then optional, then the widgets
    core extensions add to `required` (upload button, 3D viewer). Without input_order (or with
    use_input_order=False, the order of nodeData.inputs) those come right after the required ones."""
    inputs = node_def.get("input", {})
    groups = {g: [_Spec(n, v[0], v[1] if len(v) > 1 and v[1] else {}, g == "optional")
                  for n, v in inputs.get(g, {}).items()] for g in ("required", "optional")}
    extra = _extension_specs(node_def)
    order = node_def.get("input_order") if use_input_order else None
    if not order:
        return groups["required"] + extra + groups["optional"]
    ordered = []
    for group in ("required", "optional"):
        by_name = {s.name: s for s in groups[group]}
        ordered += [by_name[n] for n in order.get(group, []) if n in by_name]
    seen = {s.name for s in ordered}
    return ordered + [s for s in groups["required"] + groups["optional"] if s.name not in seen] + extra


def _extension_specs(node_def: dict) -> list[_Spec]:
    """The `upload` button after a media combo (uploadImage.ts) and the 3D viewer widgets (load3d.ts)."""
    if node_def.get("name") in EXTENSION_WIDGETS:
        name, kind = EXTENSION_WIDGETS[node_def["name"]]
        return [_Spec(name, kind, {}, False, frontend_only=True)]
    for spec in node_def.get("input", {}).get("required", {}).values():
        options = spec[1] if len(spec) > 1 and spec[1] else {}
        if (isinstance(spec[0], list) or spec[0] == "COMBO") and any(options.get(f) is True for f in UPLOAD_FLAGS):
            return [_Spec("upload", "IMAGEUPLOAD", {}, False, frontend_only=True)]
    return []


def _widget_type(spec: _Spec) -> str | None:
    """The widget this input gets in the frontend, or None when it is a socket only."""
    if spec.options.get("forceInput"):
        return None
    kind = spec.options.get("widgetType") or spec.type
    kind = "COMBO" if isinstance(kind, list) else kind
    return kind if kind in WIDGET_TYPES else None


def _socket_type(spec: _Spec) -> str:
    return "COMBO" if isinstance(spec.type, list) else spec.type


@dataclass
class _WidgetSlot:
    input: str | None  # the input it fills; None for widgets that are never sent (control, upload, viewer)
    value: Any
    dynamic_prompt: bool = False


def _widget_slots(node_def: dict) -> list[_WidgetSlot]:
    """One slot per frontend widget, in widgets_values order, holding the input's default."""
    slots = []
    for spec in _ordered_specs(node_def):
        kind = _widget_type(spec)
        if kind is None:
            continue
        if spec.frontend_only:
            slots.append(_WidgetSlot(None, None))
            continue
        if kind in ("LOAD_3D", "LOAD_3D_ANIMATION"):  # upload, extra-resources and clear buttons come first
            slots += [_WidgetSlot(None, None) for _ in range(3)]
        slots.append(_WidgetSlot(spec.name, _default(kind, spec), bool(spec.options.get("dynamicPrompts"))))
        slots += _companion_slots(kind, spec)
    return slots


def _companion_slots(kind: str, spec: _Spec) -> list[_WidgetSlot]:
    """Unsent widgets created right after an input's widget: remote-combo toggle and refresh button
    (useRemoteWidget.ts), then the control_after_generate combo (+ filter list for combos)."""
    extra = []
    remote = spec.options.get("remote")
    if kind == "COMBO" and remote:
        extra.append(_WidgetSlot(None, False))
        if remote.get("refresh_button"):
            extra.append(_WidgetSlot(None, "refresh"))
    control = spec.options.get("control_after_generate")
    if kind == "INT" and (control if control is not None else spec.name in ("seed", "noise_seed")):
        extra.append(_WidgetSlot(None, "randomize"))
    elif kind == "COMBO" and control:
        extra += [_WidgetSlot(None, "randomize"), _WidgetSlot(None, "")]
    return extra


def _default(kind: str, spec: _Spec):
    """A widget's value when the workflow does not give one (the widget constructors' rules)."""
    default = spec.options.get("default")
    if kind == "COMBO":
        choices = spec.type if isinstance(spec.type, list) else spec.options.get("options", [])
        return default if default else (choices[0] if choices else None)
    fallback = {"INT": 0, "FLOAT": 0, "BOOLEAN": False, "STRING": "", "MARKDOWN": ""}.get(kind)
    return default if default is not None else fallback


# --------------------------------------------------------------------------- the graph as the frontend holds it


@dataclass
class _Link:
    id: int
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: Any


@dataclass
class _Socket:
    name: str
    type: str
    link: int | None
    widget: str | None = None  # the widget this socket feeds, if any


@dataclass
class _Node:
    id: str
    type: str
    mode: int
    title: str
    node_def: dict | None
    sockets: list[_Socket]
    output_types: list[str]
    widgets: list[_WidgetSlot] = field(default_factory=list)

    @property
    def virtual(self) -> bool:
        return self.node_def is None


def _parse_links(workflow: dict) -> dict[int, _Link]:
    """Links as arrays [id, origin_id, origin_slot, target_id, target_slot, type] (0.4) or objects (1)."""
    links = {}
    for entry in workflow.get("links", []) or []:
        if isinstance(entry, dict):
            link = _Link(entry["id"], str(entry["origin_id"]), int(entry["origin_slot"]), str(entry["target_id"]),
                         int(entry["target_slot"]), entry.get("type"))
        else:
            link = _Link(entry[0], str(entry[1]), int(entry[2]), str(entry[3]), int(entry[4]), entry[5])
        links[link.id] = link
    return links


def _build_node(ui: dict, node_defs: dict) -> _Node:
    """Sockets in live order (sockets without widget, then widget sockets, then extra saved ones)."""
    node_id, kind = str(ui["id"]), ui["type"]
    saved = {i.get("name"): i for i in ui.get("inputs") or []}
    outputs = [o.get("type") for o in ui.get("outputs") or []]
    if kind in VIRTUAL_TYPES:
        sockets = [_Socket(i.get("name", ""), i.get("type", "*"), i.get("link")) for i in ui.get("inputs") or []]
        return _Node(node_id, kind, ui.get("mode", 0), ui.get("title", kind), None, sockets, outputs)
    if kind not in node_defs:
        raise WorkflowError(f"node {node_id}: unknown node type '{kind}' (not in the node definitions; "
                            "subgraphs and group nodes are not supported)")
    node_def = node_defs[kind]
    specs = _ordered_specs(node_def)
    plain = [s for s in specs if _widget_type(s) is None]
    widget = [s for s in specs if _widget_type(s) is not None]
    sockets = [_Socket(s.name, _socket_type(s), saved.get(s.name, {}).get("link")) for s in plain]
    sockets += [_Socket(s.name, _socket_type(s), saved.get(s.name, {}).get("link"), s.name) for s in widget]
    known = {s.name for s in specs}
    sockets += [_Socket(n, i.get("type", "*"), i.get("link"), (i.get("widget") or {}).get("name"))
                for n, i in saved.items() if n not in known]
    def_outputs = ["COMBO" if isinstance(t, list) else t for t in node_def.get("output", [])]
    title = ui.get("title") or node_def.get("display_name") or kind
    node = _Node(node_id, kind, ui.get("mode", 0), title, node_def, sockets, outputs or def_outputs)
    node.widgets = _widget_slots(node_def)
    _apply_widget_values(node, ui.get("widgets_values"), node_def)
    return node


def _apply_widget_values(node: _Node, values, node_def: dict) -> None:
    """widgets_values[i] belongs to the i-th widget; a dict is read by input name."""
    if isinstance(values, dict):
        for slot in node.widgets:
            if slot.input in values:
                slot.value = values[slot.input]
        return
    values = _drop_legacy_force_input_values(values or [], node_def, node.widgets)
    for slot, value in zip(node.widgets, values):
        slot.value = value


def _drop_legacy_force_input_values(values: list, node_def: dict, slots: list[_WidgetSlot]) -> list:
    """Saves from before frontend 1.16 kept a value for forceInput inputs: when the count matches that
    layout, drop the value at each forceInput input's index (litegraphUtil.ts migrateWidgetsValues)."""
    names = {w.input for w in slots} | {s.name for s in _extension_specs(node_def)}
    legacy = [s for s in _ordered_specs(node_def, use_input_order=False)
              if s.name in names or s.options.get("forceInput")]
    if not any(s.options.get("forceInput") for s in legacy):
        return values
    width = sum(2 if s.options.get("control_after_generate") or s.name in ("seed", "noise_seed") else 1
                for s in legacy)
    if width != len(values):
        return values
    return [v for i, v in enumerate(values) if not (i < len(legacy) and legacy[i].options.get("forceInput"))]


def _valid_connection(a, b) -> bool:
    """LiteGraph.isValidConnection: '*' or '' match anything; case-insensitive; comma lists overlap."""
    a = "" if a in ("*", None) else str(a)
    b = "" if b in ("*", None) else str(b)
    if not a or not b or a == b:
        return True
    a, b = a.lower(), b.lower()
    return bool(set(a.split(",")) & set(b.split(",")))


class _Graph:
    """Input resolution through Reroute, bypassed and muted nodes (ExecutableNodeDTO.resolveInput)."""

    def __init__(self, workflow: dict, node_defs: dict) -> None:
        if (workflow.get("definitions") or {}).get("subgraphs"):
            raise WorkflowError("subgraphs are not supported: convert them to plain nodes before saving")
        self.links = _parse_links(workflow)
        self.nodes = {str(n["id"]): _build_node(n, node_defs) for n in workflow.get("nodes", [])}
        self.ui = {str(n["id"]): n for n in workflow.get("nodes", [])}

    def link(self, link_id: int) -> _Link:
        if link_id not in self.links:
            raise WorkflowError(f"link {link_id} is used by a node but missing from 'links'")
        return self.links[link_id]

    def resolve_input(self, node: _Node, slot: int, seen: set, want: str | None = None):
        """(origin node id, origin slot) feeding node.sockets[slot], or None when nothing does."""
        if ("I", node.id, slot) in seen:
            raise WorkflowError(f"node {node.id}: circular link resolution at input {slot}")
        seen.add(("I", node.id, slot))
        if slot >= len(node.sockets) or node.sockets[slot].link is None:
            return None
        link = self.link(node.sockets[slot].link)
        if link.origin_id not in self.nodes:
            raise WorkflowError(f"link {link.id}: origin node {link.origin_id} does not exist")
        origin = self.nodes[link.origin_id]
        return self.resolve_output(origin, link.origin_slot, want or node.sockets[slot].type, seen)

    def resolve_output(self, node: _Node, slot: int, want: str, seen: set):
        if ("O", node.id, slot) in seen:
            raise WorkflowError(f"node {node.id}: circular link resolution at output {slot}")
        seen.add(("O", node.id, slot))
        if node.mode == BYPASSED:
            index = self._bypass_input(node, slot, want)
            return None if index < 0 else self.resolve_input(node, index, seen)
        if node.virtual:
            return self.resolve_input(node, slot, seen, want) if slot < len(node.sockets) else None
        return node.id, slot

    @staticmethod
    def _bypass_input(node: _Node, slot: int, want: str) -> int:
        """The input a bypassed node forwards to its output `slot` (same slot if types fit, else by type)."""
        inputs = node.sockets
        if want in ("*", ""):
            return slot if len(inputs) > slot else (0 if inputs else -1)
        out_type = node.output_types[slot] if slot < len(node.output_types) else "*"
        fits = [_valid_connection(s.type, out_type) and _valid_connection(s.type, want) for s in inputs]
        if slot < len(inputs) and fits[slot]:
            return slot
        exact = [i for i, s in enumerate(inputs) if s.type == want]
        if exact:
            return exact[0]
        return fits.index(True) if True in fits else -1

    def apply_primitives(self) -> None:
        """A PrimitiveNode copies its first widget value into every widget it is linked to."""
        for node in self.nodes.values():
            values = self.ui[node.id].get("widgets_values") or []
            if node.type != "PrimitiveNode" or not values:
                continue
            for link in self.links.values():
                target = self.nodes.get(link.target_id)
                if link.origin_id != node.id or target is None or target.virtual:
                    continue
                socket = next((s for s in target.sockets if s.link == link.id), None)
                slot = next((w for w in target.widgets if socket and w.input == socket.widget), None)
                if slot is not None:
                    slot.value = values[0]


# --------------------------------------------------------------------------- UI -> API


def ui_to_api(workflow: dict, node_defs: dict) -> dict:
    """The API prompt the ComfyUI frontend would queue for this UI-format workflow."""
    graph = _Graph(workflow, node_defs)
    graph.apply_primitives()
    prompt: dict[str, dict] = {}
    for node in graph.nodes.values():
        if node.virtual or node.mode in (MUTED, BYPASSED):
            continue
        inputs: dict[str, Any] = {}
        for slot in node.widgets:
            if slot.input is not None:
                inputs[slot.input] = _serialise_widget(slot)
        for index, socket in enumerate(node.sockets):
            origin = graph.resolve_input(node, index, set())
            if origin is not None:
                inputs[socket.name] = [origin[0], origin[1]]
        prompt[node.id] = {"inputs": inputs, "class_type": node.type, "_meta": {"title": node.title}}
    for entry in prompt.values():  # inputs fed by muted nodes disappear
        entry["inputs"] = {k: v for k, v in entry["inputs"].items()
                           if not (isinstance(v, list) and len(v) == 2 and v[0] not in prompt)}
    return prompt


def _serialise_widget(slot: _WidgetSlot):
    """List values are wrapped so they are not read as links; dynamic-prompt text loses its comments."""
    value = slot.value
    if slot.dynamic_prompt and isinstance(value, str) and "{" not in value:
        value = re.sub(r"/\*[\s\S]*?\*/|//.*", "", value)
    return {"__value__": value} if isinstance(value, list) else value


# --------------------------------------------------------------------------- wiring check


def types_compatible(output_type, input_type) -> bool:
    """An output may feed an input: equal types, '*' on either side, overlapping comma lists, COMBO->combo."""
    if isinstance(input_type, list):
        return output_type in ("COMBO", "*") or isinstance(output_type, list)
    if isinstance(output_type, list):
        return input_type in ("COMBO", "*")
    if "*" in (output_type, input_type) or output_type == input_type:
        return True
    return bool({t.strip() for t in str(output_type).split(",")} & {t.strip() for t in str(input_type).split(",")})


def check_wiring(workflow: dict, node_defs: dict) -> list[str]:
    """Problems that would make ComfyUI reject or mis-run the workflow; an empty list means none found."""
    try:
        graph = _Graph(workflow, node_defs)
        prompt = ui_to_api(workflow, node_defs)
    except WorkflowError as exc:
        return [str(exc)]
    problems = _link_problems(graph)
    for node in graph.nodes.values():
        if node.virtual:
            continue
        problems += _widget_count_problems(node, graph.ui[node.id])
        if node.id in prompt:
            problems += _input_problems(graph, node, prompt)
    return problems


def _link_problems(graph: _Graph) -> list[str]:
    problems = []
    for link in graph.links.values():
        origin, target = graph.nodes.get(link.origin_id), graph.nodes.get(link.target_id)
        if origin is None or target is None:
            missing = link.origin_id if origin is None else link.target_id
            problems.append(f"link {link.id}: connects missing node {missing}")
            continue
        if not origin.virtual and link.origin_slot >= len(origin.node_def.get("output", [])):
            problems.append(f"link {link.id}: node {origin.id} ({origin.type}) has no output {link.origin_slot}")
        if not any(s.link == link.id for s in target.sockets):
            problems.append(f"link {link.id}: node {target.id} ({target.type}) has no input holding this link")
        if origin.type == "PrimitiveNode":
            socket = next((s for s in target.sockets if s.link == link.id), None)
            if socket is not None and socket.widget is None and not target.virtual:
                problems.append(f"link {link.id}: PrimitiveNode {origin.id} feeds '{socket.name}' of node "
                                f"{target.id}, which is not a widget input")
    return problems


def _widget_count_problems(node: _Node, ui: dict) -> list[str]:
    values = ui.get("widgets_values")
    if not isinstance(values, list) or len(values) == len(node.widgets):
        return []
    names = [w.input or "(frontend-only)" for w in node.widgets]
    return [f"node {node.id} ({node.type}): {len(values)} widgets_values for {len(node.widgets)} widgets {names}"]


def _input_problems(graph: _Graph, node: _Node, prompt: dict) -> list[str]:
    problems = []
    inputs = prompt[node.id]["inputs"]
    spec_types = {s.name: s.type for s in _ordered_specs(node.node_def)}
    for name in node.node_def["input"].get("required", {}):
        if name not in inputs:
            problems.append(f"node {node.id} ({node.type}): required input '{name}' is not connected")
    for socket in node.sockets:
        value = inputs.get(socket.name)
        if not (isinstance(value, list) and len(value) == 2):
            continue
        origin = graph.nodes[value[0]]
        out_type = origin.node_def.get("output", [])[value[1]] if value[1] < len(origin.node_def.get("output", [])) \
            else None
        in_type = spec_types.get(socket.name, socket.type)
        if out_type is not None and not types_compatible(out_type, in_type):
            problems.append(f"node {node.id} ({node.type}): input '{socket.name}' expects {in_type} but node "
                            f"{origin.id} ({origin.type}) output {value[1]} is {out_type}")
    return problems


# --------------------------------------------------------------------------- a tiny executor


@dataclass
class RunResult:
    outputs: dict[str, tuple]   # node id -> the tuple its FUNCTION returned (core nodes skipped: absent)
    ui: dict[str, dict]         # node id -> its "ui" dict, for nodes that returned one
    skipped: list[str]          # node ids not run (core nodes without a class, and what depends on them)


class _Skipped:
    """The output of a node that was not run."""


def run_api_prompt(prompt: dict, node_classes: dict, load_image_fn: Callable[[str], tuple] | None = None,
                   skip_core: bool = False) -> RunResult:
    """Run an API prompt with classic node classes: output nodes and what they need, in dependency
    order, after ComfyUI-like validation. LoadImage uses load_image_fn(name) -> (IMAGE, MASK).
    Core nodes without a class raise, or with skip_core=True are skipped with everything downstream."""
    core = load_core_node_defs()
    order = _execution_order(prompt, node_classes, core)
    problems = [p for node_id in order if prompt[node_id]["class_type"] in node_classes
                for p in _validate_node(node_id, prompt[node_id], node_classes[prompt[node_id]["class_type"]])]
    if problems:
        raise WorkflowError("prompt failed validation:\n" + "\n".join(problems))
    result = RunResult({}, {}, [])
    values: dict[str, tuple] = {}
    for node_id in order:
        entry = prompt[node_id]
        kind = entry["class_type"]
        if kind == "LoadImage" and load_image_fn is not None and kind not in node_classes:
            values[node_id] = result.outputs[node_id] = tuple(load_image_fn(_unwrap(entry["inputs"]["image"])))
            continue
        if kind not in node_classes or _needs_skipped(entry, values):
            if kind not in node_classes and not skip_core:
                raise WorkflowError(f"node {node_id}: core node '{kind}' cannot run here (pass skip_core=True)")
            values[node_id] = _Skipped()
            result.skipped.append(node_id)
            continue
        outputs, ui = _run_node(node_id, entry, node_classes[kind], values, prompt)
        values[node_id] = result.outputs[node_id] = outputs
        if ui is not None:
            result.ui[node_id] = ui
    return result


def _is_output(kind: str, node_classes: dict, core: dict) -> bool:
    if kind in node_classes:
        return getattr(node_classes[kind], "OUTPUT_NODE", False) is True
    return bool(core.get(kind, {}).get("output_node"))


def _execution_order(prompt: dict, node_classes: dict, core: dict) -> list[str]:
    """Output nodes and their dependencies, each after its inputs (depth-first, cycles rejected)."""
    for node_id, entry in prompt.items():
        kind = entry.get("class_type")
        if kind not in node_classes and kind not in core:
            raise WorkflowError(f"node {node_id}: unknown class_type '{kind}'")
    outputs = sorted((i for i, e in prompt.items() if _is_output(e["class_type"], node_classes, core)), key=str)
    if not outputs:
        raise WorkflowError("prompt has no output node")
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(node_id: str) -> None:
        if state.get(node_id) == "done":
            return
        if state.get(node_id) == "active":
            raise WorkflowError(f"node {node_id}: the prompt has a cycle")
        if node_id not in prompt:
            raise WorkflowError(f"a link points at missing node {node_id}")
        state[node_id] = "active"
        for value in prompt[node_id]["inputs"].values():
            if _is_link(value):
                visit(str(value[0]))
        state[node_id] = "done"
        order.append(node_id)

    for node_id in outputs:
        visit(node_id)
    return order


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def _unwrap(value):
    return value["__value__"] if isinstance(value, dict) and "__value__" in value else value


def _needs_skipped(entry: dict, values: dict) -> bool:
    return any(_is_link(v) and isinstance(values.get(str(v[0])), _Skipped) for v in entry["inputs"].values())


def _validate_node(node_id: str, entry: dict, cls) -> list[str]:
    """ComfyUI's validate_inputs in short: required inputs, constant casts, min/max and combo checks
    (skipped for inputs VALIDATE_INPUTS takes), then VALIDATE_INPUTS with linked inputs as None."""
    types = cls.INPUT_TYPES()
    custom = _validate_inputs_args(cls)
    problems, constants = [], {}
    for group in ("required", "optional"):
        for name, spec in types.get(group, {}).items():
            where = f"node {node_id} ({entry['class_type']}) input '{name}'"
            if name not in entry["inputs"]:
                if group == "required":
                    problems.append(f"{where}: required input is missing")
                continue
            value = entry["inputs"][name]
            if _is_link(value):
                constants[name] = None
                continue
            try:
                constants[name] = value = _cast(_unwrap(value), spec[0])
            except (TypeError, ValueError) as exc:
                problems.append(f"{where}: cannot convert {value!r} to {spec[0]} ({exc})")
                continue
            if "**" not in custom and name not in custom:
                problems += _range_problems(where, value, spec)
    if hasattr(cls, "VALIDATE_INPUTS"):
        args = constants if "**" in custom else {k: v for k, v in constants.items() if k in custom}
        verdict = cls.VALIDATE_INPUTS(**args)
        if verdict is not True:
            problems.append(f"node {node_id} ({entry['class_type']}): VALIDATE_INPUTS: {verdict}")
    return problems


def _validate_inputs_args(cls) -> set[str]:
    """The inputs VALIDATE_INPUTS checks itself ({'**'} when it takes **kwargs; empty without one)."""
    if not hasattr(cls, "VALIDATE_INPUTS"):
        return set()
    params = inspect.signature(cls.VALIDATE_INPUTS).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return {"**"}
    return {p.name for p in params}


def _cast(value, kind):
    casts = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
    return casts[kind](value) if isinstance(kind, str) and kind in casts else value


def _range_problems(where: str, value, spec) -> list[str]:
    options = spec[1] if len(spec) > 1 else {}
    if "min" in options and value < options["min"]:
        return [f"{where}: value {value} smaller than min of {options['min']}"]
    if "max" in options and value > options["max"]:
        return [f"{where}: value {value} bigger than max of {options['max']}"]
    if isinstance(spec[0], (list, tuple)) and value not in spec[0]:
        return [f"{where}: value {value!r} not in {list(spec[0])}"]
    return []


def _run_node(node_id: str, entry: dict, cls, values: dict, prompt: dict) -> tuple[tuple, dict | None]:
    """Instantiate the class, call FUNCTION with resolved inputs, split {"ui", "result"} returns."""
    if getattr(cls, "INPUT_IS_LIST", False) or any(getattr(cls, "OUTPUT_IS_LIST", ()) or ()):
        raise WorkflowError(f"node {node_id}: list inputs/outputs are not supported by this executor")
    types = cls.INPUT_TYPES()
    kwargs = {}
    for group in ("required", "optional"):
        for name, spec in types.get(group, {}).items():
            if name in entry["inputs"]:
                value = entry["inputs"][name]
                kwargs[name] = values[str(value[0])][value[1]] if _is_link(value) else _cast(_unwrap(value), spec[0])
    hidden = {"UNIQUE_ID": node_id, "PROMPT": prompt, "EXTRA_PNGINFO": None, "DYNPROMPT": None}
    for name, kind in types.get("hidden", {}).items():
        if kind in HIDDEN_VALUES:
            kwargs[name] = hidden[kind]
    returned = getattr(cls(), cls.FUNCTION)(**kwargs)
    ui = None
    if isinstance(returned, dict):
        if "expand" in returned:
            raise WorkflowError(f"node {node_id}: graph expansion is not supported by this executor")
        ui, returned = returned.get("ui"), returned.get("result", ())
    returned = tuple(returned or ())
    expected = len(getattr(cls, "RETURN_TYPES", ()))
    if returned and len(returned) != expected:
        raise WorkflowError(f"node {node_id}: returned {len(returned)} values for {expected} RETURN_TYPES")
    return returned, ui


# --------------------------------------------------------------------------- LoadImage stand-in


def load_image_file(path: str | os.PathLike) -> tuple:
    """What core LoadImage returns for one file: IMAGE [F,H,W,3] float 0..1 (every frame of an animated
    file, as a batch) and MASK [F,H,W] = 1 - alpha (a 64x64 zero mask without alpha)."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps, ImageSequence

    images, masks = [], []
    with Image.open(path) as file:
        for frame in ImageSequence.Iterator(file):
            img = ImageOps.exif_transpose(frame)
            if img.mode == "I":
                img = img.point(lambda v: v * (1 / 255))
            rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
            if images and rgb.shape != images[0].shape:
                continue                                   # LoadImage skips frames of another size
            if "A" in img.getbands() or (img.mode == "P" and "transparency" in img.info):
                alpha = np.asarray(img.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
                masks.append(torch.from_numpy(1.0 - alpha))
            else:
                masks.append(torch.zeros((64, 64), dtype=torch.float32))
            images.append(rgb)
    return torch.from_numpy(np.stack(images)), torch.stack(masks)  # [F,H,W,3], [F,H,W]


def image_loader(input_dir: str | os.PathLike) -> Callable[[str], tuple]:
    """load_image_fn for run_api_prompt that reads names (optionally ending in ' [input]') from input_dir."""
    def load(name: str) -> tuple:
        return load_image_file(Path(input_dir) / name.removesuffix(" [input]"))
    return load
