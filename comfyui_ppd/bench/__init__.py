"""`python -m comfyui_ppd bench image|video|throughput|stream`: benchmarks with random weights (no model files
needed).

image: the image model's encoder, DiT step and whole image; video: the video model (PPVD + Pi3); throughput:
images/s of batch `predict`, sequential and on Ray; stream: peak memory of `predict clip.mp4` against the
clip's length. They share bench/harness.py; nothing outside bench/ imports
them except the command line's dispatch.
"""
from __future__ import annotations

import argparse
import importlib

COMMANDS = {"image": "the image model: encoder, condition, DiT step, whole image (FLOP, roofline, memory)",
            "video": "the video model (PPVD video DiT + Pi3): Pi3, DiT step, whole clip",
            "throughput": "images/s of batch predict: sequential runner and Ray, on random weights",
            "stream": "peak memory of predict clip.mp4 against the clip's length (streaming video)"}


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="python -m comfyui_ppd bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    commands = {}
    for name, text in COMMANDS.items():
        module = importlib.import_module(f".{name}", __name__)
        commands[name] = sub.add_parser(name, help=text, description=module.__doc__,
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(commands[name])
    return parser, commands


def build_parser() -> argparse.ArgumentParser:
    """`bench` with one subcommand per module of this package (each module's add_arguments fills its parser)."""
    return _build()[0]


def main(argv: list[str]) -> int:
    """Parse `bench ...` and run the subcommand; its module checks the arguments argparse cannot."""
    parser, commands = _build()
    args = parser.parse_args(argv)
    return importlib.import_module(f".{args.bench}", __name__).main(args, commands[args.bench])
