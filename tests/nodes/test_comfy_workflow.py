"""tests/support/comfy_workflow.py: UI->API conversion rules, wiring checks and the tiny executor."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

import comfy_workflow as cw


class ToyScale:
    """IMAGE * factor; `seed` gets the frontend's control widget by name, `mode` is a plain combo."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "factor": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 4.0}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 99}), "mode": (["mul", "add"],)},
                "optional": {"mask": ("MASK",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "toy"

    def run(self, image, factor, seed, mode, mask=None):
        return (image * factor if mode == "mul" else image + factor,)


class ToyMaskFirst:
    """Inputs in the order MASK, IMAGE: a bypass must pick the IMAGE input by type."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",), "image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    def run(self, mask, image):
        return (image,)


class ToySink:
    """An output node that reports the mean of its image, its prefix and its own node id."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "prefix": ("STRING", {"default": "ppd"})},
                "hidden": {"node": "UNIQUE_ID"}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, image, prefix, node):
        return {"ui": {"text": [f"{prefix}:{float(image.mean()):.4f}:{node}"]}}


class ToyOptions:
    """Widget corner cases: seed without control, a combo with control, a forceInput STRING."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 3, "control_after_generate": False}),
                             "pick": (["x", "y", "z"], {"control_after_generate": True}),
                             "text": ("STRING", {"forceInput": True}), "n": ("INT", {"default": 7})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"


CLASSES = {"ToyScale": ToyScale, "ToyMaskFirst": ToyMaskFirst, "ToySink": ToySink, "ToyOptions": ToyOptions}
DEFS = cw.node_defs_from_classes(CLASSES, {"ToyScale": "Toy Scale"})


def node(node_id, kind, widgets=None, inputs=(), mode=0, title=None, outputs=None):
    """A UI-format node; inputs are (name, type, link id or None[, widget name])."""
    ui = {"id": node_id, "type": kind, "mode": mode,
          "inputs": [dict(name=i[0], type=i[1], link=i[2], **({"widget": {"name": i[3]}} if len(i) > 3 else {}))
                     for i in inputs]}
    if widgets is not None:
        ui["widgets_values"] = widgets
    if title:
        ui["title"] = title
    if outputs is not None:
        ui["outputs"] = [{"name": t, "type": t, "links": []} for t in outputs]
    return ui


def workflow(nodes, links):
    return {"version": 0.4, "nodes": nodes, "links": [list(link) for link in links]}


def chain(middle_mode=0):
    """LoadImage(1) -> ToyScale(2) -> ToySink(3)."""
    return workflow(
        [node(1, "LoadImage", ["cat.png", "image"]),
         node(2, "ToyScale", [0.5, 11, "randomize", "mul"], [("image", "IMAGE", 1)], mode=middle_mode),
         node(3, "ToySink", ["out"], [("image", "IMAGE", 2)])],
        [(1, 1, 0, 2, 0, "IMAGE"), (2, 2, 0, 3, 0, "IMAGE")])


# --------------------------------------------------------------------------- node definitions


def test_node_defs_from_classes_match_the_server_shape_and_keep_core_nodes():
    toy = DEFS["ToyScale"]
    assert toy["input_order"] == {"required": ["image", "factor", "seed", "mode"], "optional": ["mask"]}
    assert toy["input"]["required"]["mode"] == [["mul", "add"]]
    assert (toy["output"], toy["output_name"], toy["display_name"]) == (["IMAGE"], ["IMAGE"], "Toy Scale")
    assert DEFS["ToySink"]["output_node"] is True and toy["output_node"] is False
    assert DEFS["ToyMaskFirst"]["category"] == "sd"
    assert DEFS["ToySink"]["input_order"]["hidden"] == ["node"]
    assert DEFS["KSampler"]["input_order"]["required"][:2] == ["model", "seed"]


# --------------------------------------------------------------------------- UI -> API


def test_widgets_follow_input_order_and_skip_the_seed_control_widget():
    prompt = cw.ui_to_api(chain(), DEFS)
    assert prompt["2"] == {"inputs": {"factor": 0.5, "seed": 11, "mode": "mul", "image": ["1", 0]},
                           "class_type": "ToyScale", "_meta": {"title": "Toy Scale"}}
    assert prompt["1"]["inputs"] == {"image": "cat.png"}  # the upload button's value is not sent
    assert prompt["3"]["inputs"] == {"prefix": "out", "image": ["2", 0]}


def test_core_samplers_skip_seed_and_noise_seed_controls():
    k = node(1, "KSampler", [5, "fixed", 20, 7.5, "euler", "normal", 1.0])
    ka = node(2, "KSamplerAdvanced", ["enable", 9, "increment", 30, 8, "dpmpp_2m", "karras", 0, 30, "disable"])
    prompt = cw.ui_to_api(workflow([k, ka], []), DEFS)
    assert prompt["1"]["inputs"] == {"seed": 5, "steps": 20, "cfg": 7.5, "sampler_name": "euler",
                                     "scheduler": "normal", "denoise": 1.0}
    assert prompt["2"]["inputs"]["noise_seed"] == 9 and prompt["2"]["inputs"]["steps"] == 30
    assert prompt["2"]["inputs"]["return_with_leftover_noise"] == "disable"


def test_explicit_control_flags_and_force_input():
    # seed has control_after_generate False (no control widget); the combo has control + filter widgets;
    # the forceInput STRING has no widget at all
    opts = node(1, "ToyOptions", [4, "y", "increment", "", 8])
    assert cw.ui_to_api(workflow([opts], []), DEFS)["1"]["inputs"] == {"seed": 4, "pick": "y", "n": 8}


def test_legacy_values_for_force_input_are_dropped():
    # saves from before frontend 1.16 held a value for the forceInput input too. The frontend counts
    # 2 values for `seed` (by name) and `pick` (control), 1 for `text` and `n`: 6 values means a legacy
    # save, and the value at the forceInput input's index (2) is dropped
    legacy = node(1, "ToyOptions", [4, "y", "old text", "increment", "", 8])
    assert cw.ui_to_api(workflow([legacy], []), DEFS)["1"]["inputs"] == {"seed": 4, "pick": "y", "n": 8}


def test_missing_widgets_values_keep_the_defaults():
    prompt = cw.ui_to_api(workflow([node(1, "ToyScale")], []), DEFS)
    assert prompt["1"]["inputs"] == {"factor": 1.0, "seed": 0, "mode": "mul"}


def test_links_in_object_form_give_the_same_prompt():
    old = chain()
    new = copy.deepcopy(old)
    new["version"] = 1
    new["links"] = [dict(zip(("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"), link))
                    for link in old["links"]]
    assert cw.ui_to_api(new, DEFS) == cw.ui_to_api(old, DEFS)


def test_linked_widget_input_overrides_its_value():
    wf = workflow([node(1, "PrimitiveInt", [5, "fixed"]),
                   node(2, "ToyScale", [0.5, 11, "fixed", "mul"], [("seed", "INT", 1, "seed")])],
                  [(1, 1, 0, 2, 0, "INT")])
    assert cw.ui_to_api(wf, DEFS)["2"]["inputs"]["seed"] == ["1", 0]


def test_muted_node_is_dropped_with_the_inputs_it_fed():
    prompt = cw.ui_to_api(chain(middle_mode=cw.MUTED), DEFS)
    assert set(prompt) == {"1", "3"}
    assert prompt["3"]["inputs"] == {"prefix": "out"}


def test_widget_input_fed_by_a_muted_node_disappears():
    wf = workflow([node(1, "PrimitiveInt", [5, "fixed"], mode=cw.MUTED),
                   node(2, "ToyScale", [0.5, 11, "fixed", "mul"], [("seed", "INT", 1, "seed")])],
                  [(1, 1, 0, 2, 0, "INT")])
    assert "seed" not in cw.ui_to_api(wf, DEFS)["2"]["inputs"]


def test_bypassed_node_forwards_the_input_in_the_same_slot():
    prompt = cw.ui_to_api(chain(middle_mode=cw.BYPASSED), DEFS)
    assert set(prompt) == {"1", "3"}
    assert prompt["3"]["inputs"]["image"] == ["1", 0]


def test_bypassed_node_forwards_the_first_input_of_the_wanted_type():
    wf = workflow([node(1, "LoadImage", ["cat.png", "image"]),
                   node(2, "ToyMaskFirst", None, [("mask", "MASK", 1), ("image", "IMAGE", 2)], mode=cw.BYPASSED),
                   node(3, "ToySink", ["out"], [("image", "IMAGE", 3)])],
                  [(1, 1, 1, 2, 0, "MASK"), (2, 1, 0, 2, 1, "IMAGE"), (3, 2, 0, 3, 0, "IMAGE")])
    assert cw.ui_to_api(wf, DEFS)["3"]["inputs"]["image"] == ["1", 0]


def test_bypassed_node_without_a_connected_match_feeds_nothing():
    wf = chain(middle_mode=cw.BYPASSED)
    wf["nodes"][1]["inputs"][0]["link"] = None
    wf["links"] = wf["links"][1:]
    assert "image" not in cw.ui_to_api(wf, DEFS)["3"]["inputs"]


def test_reroute_passes_its_input_through():
    wf = workflow([node(1, "LoadImage", ["cat.png", "image"]),
                   node(2, "Reroute", None, [("", "*", 1)], outputs=["IMAGE"]),
                   node(3, "ToySink", ["out"], [("image", "IMAGE", 2)])],
                  [(1, 1, 0, 2, 0, "IMAGE"), (2, 2, 0, 3, 0, "IMAGE")])
    prompt = cw.ui_to_api(wf, DEFS)
    assert set(prompt) == {"1", "3"} and prompt["3"]["inputs"]["image"] == ["1", 0]


def test_primitive_node_writes_its_value_into_the_target_widget():
    wf = workflow([node(1, "PrimitiveNode", [42, "fixed"], outputs=["INT"]),
                   node(2, "ToyScale", [0.5, 11, "fixed", "mul"], [("seed", "INT", 1, "seed")]),
                   node(3, "ToyScale", [0.5, 12, "fixed", "add"], [("seed", "INT", 2, "seed")])],
                  [(1, 1, 0, 2, 0, "INT"), (2, 1, 0, 3, 0, "INT")])
    prompt = cw.ui_to_api(wf, DEFS)
    assert set(prompt) == {"2", "3"}
    assert prompt["2"]["inputs"]["seed"] == 42 == prompt["3"]["inputs"]["seed"]
    assert prompt["3"]["inputs"]["mode"] == "add"


def test_notes_vanish_and_titles_are_kept():
    wf = workflow([node(1, "Note", ["hello"]), node(2, "MarkdownNote", ["# hi"]),
                   node(3, "ToySink", ["out"], title="My sink")], [])
    prompt = cw.ui_to_api(wf, DEFS)
    assert list(prompt) == ["3"] and prompt["3"]["_meta"] == {"title": "My sink"}


def test_list_values_are_wrapped_and_dynamic_prompt_comments_removed():
    wf = workflow([node(1, "ToySink", [["a", "b"]]), node(2, "CLIPTextEncode", ["a cat // draft note"])], [])
    prompt = cw.ui_to_api(wf, DEFS)
    assert prompt["1"]["inputs"]["prefix"] == {"__value__": ["a", "b"]}
    assert prompt["2"]["inputs"]["text"] == "a cat "


def test_unknown_nodes_and_subgraphs_are_refused():
    with pytest.raises(cw.WorkflowError, match="unknown node type 'Mystery'"):
        cw.ui_to_api(workflow([node(1, "Mystery")], []), DEFS)
    wf = chain()
    wf["definitions"] = {"subgraphs": [{"id": "x"}]}
    with pytest.raises(cw.WorkflowError, match="subgraphs"):
        cw.ui_to_api(wf, DEFS)


# --------------------------------------------------------------------------- wiring


def test_a_correct_workflow_has_no_wiring_problems():
    assert cw.check_wiring(chain(), DEFS) == []


def test_type_mismatch_is_reported():
    wf = chain()
    wf["links"][0] = [1, 1, 1, 2, 0, "MASK"]  # LoadImage's MASK into ToyScale.image
    problems = cw.check_wiring(wf, DEFS)
    assert len(problems) == 1 and "expects IMAGE" in problems[0] and "is MASK" in problems[0]


def test_unconnected_required_input_is_reported():
    wf = chain()
    wf["nodes"][2]["inputs"] = []
    wf["links"] = wf["links"][:1]
    assert cw.check_wiring(wf, DEFS) == ["node 3 (ToySink): required input 'image' is not connected"]


def test_widget_count_and_dangling_links_are_reported():
    wf = chain()
    wf["nodes"][1]["widgets_values"] = [0.5, 11, "mul"]  # the seed control value is missing
    wf["links"].append([9, 7, 0, 3, 0, "IMAGE"])
    problems = cw.check_wiring(wf, DEFS)
    assert any("3 widgets_values for 4 widgets" in p for p in problems)
    assert any("link 9: connects missing node 7" in p for p in problems)


def test_primitive_into_a_socket_only_input_is_reported():
    wf = workflow([node(1, "PrimitiveNode", [1], outputs=["IMAGE"]),
                   node(2, "ToySink", ["out"], [("image", "IMAGE", 1)])], [(1, 1, 0, 2, 0, "IMAGE")])
    assert any("not a widget input" in p for p in cw.check_wiring(wf, DEFS))


@pytest.mark.parametrize("out_type, in_type, ok", [
    ("IMAGE", "IMAGE", True), ("INT", "FLOAT", False), ("IMAGE", "*", True), ("*", "MASK", True),
    ("IMAGE,MASK", "MASK", True), ("COMBO", ["a", "b"], True), ("STRING", ["a", "b"], False),
    ("PPD_MODEL", "PPD_DEPTH", False)])
def test_types_compatible(out_type, in_type, ok):
    assert cw.types_compatible(out_type, in_type) is ok


# --------------------------------------------------------------------------- executor


@pytest.fixture
def input_dir(tmp_path):
    pixels = np.full((2, 3, 3), 102, dtype=np.uint8)  # 102/255 = 0.4
    Image.fromarray(pixels).save(tmp_path / "cat.png")
    return tmp_path


def test_converted_workflow_runs_with_the_toy_nodes(input_dir):
    prompt = cw.ui_to_api(chain(), DEFS)
    result = cw.run_api_prompt(prompt, CLASSES, cw.image_loader(input_dir))
    image, mask = result.outputs["1"]
    assert image.shape == (1, 2, 3, 3) and mask.shape == (1, 64, 64)
    assert torch.allclose(result.outputs["2"][0], torch.full((1, 2, 3, 3), 0.2))
    assert result.ui == {"3": {"text": ["out:0.2000:3"]}} and result.skipped == []


def test_only_output_nodes_and_their_inputs_run(input_dir):
    prompt = cw.ui_to_api(chain(), DEFS)
    prompt["9"] = {"class_type": "ToyScale", "inputs": {"image": ["1", 0], "factor": 2.0, "seed": 0, "mode": "x"}}
    result = cw.run_api_prompt(prompt, CLASSES, cw.image_loader(input_dir))
    assert "9" not in result.outputs  # not an output and not needed: neither validated nor run


def test_core_nodes_raise_unless_skipped(input_dir):
    prompt = {"1": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "depth.safetensors"}},
              "2": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}},
              "3": {"class_type": "ToySink", "inputs": {"image": ["2", 0], "prefix": "p"}},
              "4": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    with pytest.raises(cw.WorkflowError, match="core node 'PreviewImage'"):
        cw.run_api_prompt(prompt, CLASSES, cw.image_loader(input_dir))
    result = cw.run_api_prompt(prompt, CLASSES, cw.image_loader(input_dir), skip_core=True)
    assert result.skipped == ["4"] and "3" in result.ui and "1" not in result.outputs


def test_nodes_downstream_of_a_skipped_core_node_are_skipped():
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {}},
              "2": {"class_type": "ToySink", "inputs": {"image": ["1", 0], "prefix": "p"}}}
    with pytest.raises(cw.WorkflowError, match="unknown class_type 'EmptyImage'"):
        cw.run_api_prompt(prompt, CLASSES, skip_core=True)
    prompt["1"]["class_type"] = "ImageInvert"
    prompt["1"]["inputs"] = {"image": ["3", 0]}
    prompt["3"] = {"class_type": "LoadImage", "inputs": {"image": "cat.png"}}
    result = cw.run_api_prompt(prompt, CLASSES, skip_core=True)
    assert result.skipped == ["3", "1", "2"] and result.ui == {}


def test_validation_checks_ranges_combos_and_required_inputs(input_dir):
    prompt = cw.ui_to_api(chain(), DEFS)
    prompt["2"]["inputs"].update(factor=9.0, mode="div")
    del prompt["3"]["inputs"]["prefix"]
    with pytest.raises(cw.WorkflowError) as err:
        cw.run_api_prompt(prompt, CLASSES, cw.image_loader(input_dir))
    text = str(err.value)
    assert "'factor': value 9.0 bigger than max of 4.0" in text
    assert "'mode': value 'div' not in ['mul', 'add']" in text
    assert "node 3 (ToySink) input 'prefix': required input is missing" in text


def test_validate_inputs_replaces_the_builtin_checks_for_its_arguments(input_dir):
    class Checked(ToyScale):
        @classmethod
        def VALIDATE_INPUTS(cls, factor, image):
            assert image is None  # linked inputs arrive as None, as in ComfyUI
            return True if factor < 100 else "factor must stay below 100"

    classes = dict(CLASSES, ToyScale=Checked)
    prompt = cw.ui_to_api(chain(), DEFS)
    prompt["2"]["inputs"]["factor"] = 9.0  # above max, but VALIDATE_INPUTS owns `factor`
    assert "2" in cw.run_api_prompt(prompt, classes, cw.image_loader(input_dir)).outputs
    prompt["2"]["inputs"]["factor"] = 200.0
    with pytest.raises(cw.WorkflowError, match="factor must stay below 100"):
        cw.run_api_prompt(prompt, classes, cw.image_loader(input_dir))


def test_cycles_are_rejected():
    prompt = {"1": {"class_type": "ToyScale", "inputs": {"image": ["2", 0], "factor": 1, "seed": 0, "mode": "mul"}},
              "2": {"class_type": "ToySink", "inputs": {"image": ["1", 0], "prefix": "p"}}}
    prompt["1"]["inputs"]["image"] = ["1", 0]
    with pytest.raises(cw.WorkflowError, match="cycle"):
        cw.run_api_prompt(prompt, CLASSES)


def test_load_image_file_follows_loadimage(tmp_path):
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 51  # alpha 0.2 -> mask 0.8
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image, mask = cw.load_image_file(tmp_path / "a.png")
    assert image.shape == (1, 4, 5, 3) and image.dtype == torch.float32
    assert torch.equal(image[0, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert mask.shape == (1, 4, 5) and torch.allclose(mask, torch.full((1, 4, 5), 0.8))
