"""`python -m comfyui_ppd ...`: see comfyui_ppd.cli."""
import sys

from .cli import main

sys.exit(main())
