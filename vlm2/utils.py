"""Small helpers shared by the tools."""
import os
import sys


def allow_project_imports() -> None:
    """Let ``custom_imports`` name ``projects.<task>`` when a tool runs from the repository
    root: Python puts the script's folder on ``sys.path``, not the working directory."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
