#!/usr/bin/env python3
"""Real-browser check of the shipped workflows: a private headless ComfyUI with this pack, Chromium driven by
tools/browser_check.mjs (playwright-core), screenshots plus a JSON/text summary per workflow, node design and
model set (tiny random checkpoints present, or none). Standard library only; torch is needed only by the
interpreter that writes the tiny checkpoints (--model-python).

    COMFY_DIR=<ComfyUI checkout> COMFY_PYTHON=<its venv python> NODE_PATH=<node_modules with playwright-core> \
        python3 tools/browser_check.py --out /tmp/ppd-browser-check
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PACK = Path(__file__).resolve().parents[1]
PACK_NAME = "ppd-browser-check"          # private name under custom_nodes
DESIGNS = ("classic", "nodes2")          # nodes2 = "Modern Node Design" (setting Comfy.VueNodes.Enabled)
TINY_MODELS = """
import sys
from pathlib import Path
from tests.support.tiny_models import write_tiny_models
from tests.support.tiny_ppvd import write_tiny_ppvd
folder = Path(sys.argv[1])
write_tiny_models(folder)
write_tiny_ppvd(folder)
"""
TINY_FILES = ("ppd.pth", "depth_anything_v2_vitl.pth", "moge2_vitl_normal.pt", "ppvd.pth", "pi3.safetensors")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def private_comfy(comfy_dir: Path, work: Path) -> Path:
    """A fresh copy of the ComfyUI checkout whose custom_nodes hold only this pack, with empty user and
    model folders for the pack, so no other helper's server or pack is touched or loaded."""
    dest = work / "ComfyUI"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(comfy_dir, dest, symlinks=True, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    nodes = dest / "custom_nodes"
    for entry in nodes.iterdir():
        if entry.is_symlink() or entry.is_dir():
            entry.unlink() if entry.is_symlink() else shutil.rmtree(entry)
    (nodes / PACK_NAME).symlink_to(PACK)
    for sub in ("user", "models/ppd", "input", "output", "temp"):
        shutil.rmtree(dest / sub, ignore_errors=True)
    (dest / "input").mkdir()
    for f in (PACK / "example_inputs").iterdir():
        shutil.copy(f, dest / "input" / f.name)
    return dest


def tiny_models(folder: Path, python: str) -> None:
    """Tiny random checkpoints of every family (the tests' builders), written once and reused."""
    if all((folder / name).is_file() for name in TINY_FILES):
        return
    env = dict(os.environ, PYTHONPATH=str(PACK), OMP_NUM_THREADS="1")
    subprocess.run([python, "-c", TINY_MODELS, str(folder)], cwd=PACK, env=env, check=True)


class Server:
    """ComfyUI main.py on a free loopback port, in its own process group, stopped by `stop()`."""

    def __init__(self, comfy: Path, python: str, log: Path, yaml: Path | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--database-url", "sqlite:///:memory:", "--disable-api-nodes"]
        if yaml:
            cmd += ["--extra-model-paths-config", str(yaml)]
        self.log = log.open("w")
        self.proc = subprocess.Popen(cmd, cwd=comfy, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait(self, timeout: float) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"ComfyUI exited ({self.proc.returncode}); see {self.log.name}")
            try:
                get_json(self.url + "/system_stats", 2)
                return
            except OSError:
                time.sleep(1)
        raise SystemExit(f"ComfyUI did not answer within {timeout:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def check_mode(args, comfy: Path, mode: str, workflows: list[Path], out: Path) -> dict:
    """One server with models `present` (tiny checkpoints through extra_model_paths) or `absent`."""
    yaml = None
    if mode == "present":
        models = args.workdir / "tiny_models"
        tiny_models(models, args.model_python)
        yaml = args.workdir / "extra_model_paths.yaml"
        yaml.write_text(f"browser_check:\n    ppd: {models}\n")
    shutil.rmtree(comfy / "user", ignore_errors=True)          # fresh-install settings for every mode
    shutil.rmtree(comfy / "output", ignore_errors=True)
    server = Server(comfy, args.comfy_python, out / f"comfyui_{mode}.log", yaml)
    try:
        server.wait(args.startup_timeout)
        info = get_json(server.url + "/object_info/PPD_LoadModel")
        if "PPD_LoadModel" not in info:
            raise SystemExit(f"the pack did not load; see {out / f'comfyui_{mode}.log'}")
        config = {"url": server.url, "out": str(out), "mode": mode, "pack_name": PACK_NAME,
                  "designs": args.designs, "run": mode == "present" and not args.no_run,
                  "timeout_ms": int(args.timeout * 1000), "chromium": args.chromium,
                  "workflows": [{"name": w.stem, "graph": json.loads(w.read_text())} for w in workflows]}
        cfg = args.workdir / f"config_{mode}.json"
        cfg.write_text(json.dumps(config))
        env = dict(os.environ, NODE_PATH=args.node_path)
        subprocess.run([args.node, str(PACK / "tools" / "browser_check.mjs"), str(cfg)], env=env, check=True,
                       timeout=args.timeout * len(workflows) * len(args.designs) + 300)
        return json.loads((out / f"results_{mode}.json").read_text())
    finally:
        server.stop()


def from_pack(message: str) -> bool:
    """A console line the pack caused: its extension's URL, an internal-module import, or its node names
    (the frontend's look-ups of node ids in the online registry, blocked offline, are left out)."""
    if "api.comfy.org" in message:
        return False
    return f"/extensions/{PACK_NAME}/" in message or "widgets.js" in message or "PPD" in message


def summary_lines(results: list[dict]) -> list[str]:
    lines = []
    for r in results:
        head = f"[{r['mode']}/{r['design']}] {r['workflow']}"
        o = r["open"]
        lines.append(head)
        lines.append(f"  open: missing-models box: {o['missing_models'] or 'none'}; download offers: "
                     f"{o['download_offers']}; overlaps: {len(o['overlaps'])}; clipped: {len(o['clipped'])}")
        panel = o.get("missing_panel")
        if panel:
            lines.append(f"    missing-models list: {panel['texts']}; offers: {panel['download_offers']}")
        if o["red_nodes"]:
            lines.append(f"    nodes drawn red: {o['red_nodes']}")
        for ov in o["overlaps"]:
            lines.append(f"    overlap: {ov}")
        for c in o["clipped"]:
            lines.append(f"    clipped: {c}")
        run = r.get("run")
        if run:
            lines.append(f"  run: {run['status']} in {run['seconds']:.1f} s; overlaps after run: "
                         f"{len(run['overlaps'])}; clipped: {len(run['clipped'])}")
            for ov in run["overlaps"]:
                lines.append(f"    overlap: {ov}")
            for c in run["clipped"]:
                lines.append(f"    clipped: {c}")
            for err in run.get("node_errors", []) + run.get("messages", []):
                lines.append(f"    error: {err}")
            m = run.get("media", {})
            lines.append(f"    media: images {[i['size'] for i in m.get('images', [])]}, videos "
                         f"{[(v['size'], v['ready']) for v in m.get('videos', [])]}, canvases {m.get('canvases')} "
                         f"with {m.get('canvas_colours')} colours")
            for text in run["dialogs"]:
                lines.append(f"    box: {text[:300]!r}")
        for msg in filter(from_pack, r["console"]):
            lines.append(f"  console (pack): {msg[:300]}")
        registry = sum("api.comfy.org/comfy-nodes/" in m for m in r["console"])
        lines.append(f"  console warnings/errors (all): {len(r['console'])}, of which {registry} are the frontend's "
                     "registry look-ups of node ids, blocked offline")
        lines.append(f"  screenshots: {', '.join(r['screenshots'])}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfy-dir", type=Path, default=os.environ.get("COMFY_DIR"),
                    help="ComfyUI checkout to copy (default: $COMFY_DIR; required)")
    ap.add_argument("--comfy-python", default=os.environ.get("COMFY_PYTHON"),
                    help="python of that ComfyUI's venv (default: $COMFY_PYTHON; required)")
    ap.add_argument("--model-python", default=os.environ.get("MODEL_PYTHON", "python3"),
                    help="interpreter with torch that writes the tiny checkpoints")
    ap.add_argument("--out", type=Path, default=Path("/tmp/ppd-browser-check"), help="screenshots and summary")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ppd-browser-work"),
                    help="private ComfyUI copy and tiny checkpoints (reused)")
    ap.add_argument("--models", choices=("present", "absent", "both"), default="both")
    ap.add_argument("--designs", default=",".join(DESIGNS), help="comma list of classic,nodes2")
    ap.add_argument("--workflow", action="append", type=Path, help="workflow JSON (default: workflows/*.json)")
    ap.add_argument("--no-run", action="store_true", help="only open the workflows, do not queue them")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per queued workflow")
    ap.add_argument("--startup-timeout", type=float, default=180)
    ap.add_argument("--node", default="node")
    ap.add_argument("--node-path", default=os.environ.get("NODE_PATH"),
                    help="node_modules folder with playwright-core (default: $NODE_PATH; required)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    missing = [f"{flag} (or {env})" for flag, env, value in (("--comfy-dir", "COMFY_DIR", args.comfy_dir),
               ("--comfy-python", "COMFY_PYTHON", args.comfy_python), ("--node-path", "NODE_PATH", args.node_path))
               if not value]
    if missing:
        ap.error(f"missing {', '.join(missing)}: name the ComfyUI checkout, its venv's python and the node_modules "
                 "folder holding playwright-core, e.g. COMFY_DIR=~/ComfyUI COMFY_PYTHON=~/ComfyUI/venv/bin/python "
                 "NODE_PATH=~/pw/node_modules python3 tools/browser_check.py")
    args.comfy_dir = Path(args.comfy_dir)
    args.designs = [d for d in args.designs.split(",") if d]
    if not set(args.designs) <= set(DESIGNS):
        ap.error(f"--designs takes {','.join(DESIGNS)}")
    workflows = args.workflow or sorted((PACK / "workflows").glob("*.json"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)

    signal.signal(signal.SIGTERM, signal.default_int_handler)    # a kill still stops the server and browser
    started = time.time()
    comfy = private_comfy(args.comfy_dir, args.workdir)
    modes = ("present", "absent") if args.models == "both" else (args.models,)
    results = []
    for mode in modes:
        results += check_mode(args, comfy, mode, workflows, args.out)
    version = get_frontend_version(args.comfy_python)
    report = {"comfy_dir": str(args.comfy_dir), "frontend": version, "seconds": round(time.time() - started, 1),
              "results": results}
    (args.out / "summary.json").write_text(json.dumps(report, indent=1))
    lines = [f"ComfyUI {args.comfy_dir}, frontend {version}, {report['seconds']} s"] + summary_lines(results)
    (args.out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def get_frontend_version(python: str) -> str:
    code = "import importlib.metadata as m; print(m.version('comfyui-frontend-package'))"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
