"""trainers is a pure library: it must never import Django or the runs app."""

import ast
import subprocess
import sys

from tests.trainers.helpers import ROOT

FORBIDDEN = ("django", "runs", "webapp", "frontend", "rest_framework", "channels", "celery")


def test_no_forbidden_imports_in_source():
    bad = []
    for path in sorted((ROOT / "trainers").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            bad += [f"{path}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not bad


def test_importing_everything_loads_no_django():
    code = (
        "import pkgutil, importlib, sys, trainers\n"
        "for m in pkgutil.walk_packages(trainers.__path__, 'trainers.'):\n"
        "    if m.name != 'trainers.__main__': importlib.import_module(m.name)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
