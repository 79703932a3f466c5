"""The frontend extension in web/ that shows each PPD node's `ui.text` under the node."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from plumbing import REPO


def web_dir(pack) -> Path:
    return (REPO / pack.WEB_DIRECTORY).resolve()


def test_pack_exports_a_web_directory_with_the_extension(pack):
    assert "WEB_DIRECTORY" in pack.__all__
    scripts = sorted(p.name for p in web_dir(pack).rglob("*.js"))
    assert scripts == ["ppd_text.js"], scripts


def test_extension_imports_resolve_to_the_frontends_scripts(pack):
    # ComfyUI serves web/<rel> as /extensions/<pack folder>/<rel>; the frontend's modules are /scripts/*.js.
    for script in web_dir(pack).rglob("*.js"):
        depth = len(script.relative_to(web_dir(pack)).parts) - 1
        imports = re.findall(r'^import .* from "([^"]+)";$', script.read_text(), re.MULTILINE)
        assert imports, f"{script.name} imports nothing"
        for target in imports:
            assert target.startswith("../" * (depth + 2) + "scripts/"), (script.name, target)


def test_extension_wraps_on_executed_of_ppd_nodes_without_saving_the_text(pack):
    js = (web_dir(pack) / "ppd_text.js").read_text()
    assert 'startsWith("PPD_")' in js and "prototype.onExecuted" in js and "message?.text" in js
    assert "widget.serialize = false" in js and "widget.options.serialize = false" in js


def classes_returning_ui_text() -> set[str]:
    """Names of the classes in nodes/*.py holding a dict literal with a "text" key (their `ui` result)."""
    found = set()
    for source in (REPO / "nodes").glob("*.py"):
        for cls in ast.walk(ast.parse(source.read_text())):
            if isinstance(cls, ast.ClassDef) and any(
                    isinstance(d, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "text" for k in d.keys)
                    for d in ast.walk(cls)):
                found.add(cls.name)
    return found


def test_every_node_that_sends_ui_text_is_covered_by_the_extension(pack):
    senders = classes_returning_ui_text()
    assert "PPD_LoadModel" in senders and "PPD_DepthSampler" in senders   # the scan sees the known senders
    keys = {cls.__name__: key for key, cls in pack.NODE_CLASS_MAPPINGS.items()}
    for name in senders:
        assert name in keys, f"{name} sends ui text but is not registered"
    assert all(key.startswith("PPD_") for key in pack.NODE_CLASS_MAPPINGS), "the extension matches node ids on PPD_"
