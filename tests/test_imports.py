"""Import hygiene: every module of core/ and models/ imports without streamlit.

The headless layers (the CLI, jobs, benches) must run where streamlit is not installed or not
wanted, so no module below pages/ may import it, directly or through another module. A fresh
interpreter imports every module of every sub-package and reports what it imported and whether
streamlit came with it; the test also checks that the walk really reached every module file, so
it cannot pass by importing nothing.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "models")

WALK = """
import importlib, json, pkgutil, sys

def fail(name):
    raise ImportError(f"cannot import package {name}")

imported = []
for root in sys.argv[1:]:
    package = importlib.import_module(root)
    imported.append(root)
    for info in pkgutil.walk_packages(package.__path__, prefix=root + ".", onerror=fail):
        if info.name.rsplit(".", 1)[-1] == "__main__":   # running it would start the CLI
            continue
        importlib.import_module(info.name)
        imported.append(info.name)
loaded = sorted(m for m in sys.modules if m == "streamlit" or m.startswith("streamlit."))
print(json.dumps({"imported": imported, "streamlit": loaded}))
"""


def module_files() -> set[str]:
    """Dotted names of every .py file below the packages (``__main__`` excluded), from the disk."""
    names = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__":
                continue
            names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_headless_module_imports_without_streamlit():
    out = subprocess.run([sys.executable, "-c", WALK, *PACKAGES], capture_output=True, text=True,
                         cwd=str(ROOT), timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    imported = set(report["imported"])
    # the walk went into the sub-packages, not only the top level...
    assert {"core.data.store", "core.modeling.training", "core.insight.explain", "core.charts.performance",
            "core.runtime.jobs", "models.transformer"} <= imported
    # ...and reached every module file on disk (a folder without __init__.py would be skipped)
    assert imported == module_files()
    assert report["streamlit"] == [], f"streamlit was imported: {report['streamlit'][:5]}"
