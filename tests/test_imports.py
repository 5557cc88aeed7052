"""Every module of the package imports first, in a fresh interpreter: no package cycles."""
import importlib.util
import pkgutil
import subprocess
import sys

import adapmtl

# One child per module, forked from an interpreter that has loaded only third-party
# libraries: each child imports one adapmtl module first (a cycle shows only then),
# without paying torch's import time again.
CHILD_PER_MODULE = """
import importlib, os, sys
import numpy, pydantic, safetensors, torch, tqdm, yaml
assert not [m for m in sys.modules if m.split(".")[0] == "adapmtl"], "the parent must start without adapmtl"
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException as error:
            print(f"{name}: {type(error).__name__}: {error}", flush=True)
            os._exit(1)
        os._exit(0)
    os.waitpid(pid, 0)
"""


OPTIONAL = {"adapmtl.integrations.lightning": "lightning", "adapmtl.integrations.transformers": "transformers"}
"""Modules that need an optional extra: imported only where it is installed."""


def _modules() -> list[str]:
    walked = [info.name for info in pkgutil.walk_packages(adapmtl.__path__, "adapmtl.")]
    missing = {m for m, extra in OPTIONAL.items() if importlib.util.find_spec(extra) is None}
    return ["adapmtl", *(name for name in walked if not name.endswith("__main__") and name not in missing)]


def test_the_package_has_many_modules():
    # Guards the loop below against walking nothing.
    assert {"adapmtl.methods", "adapmtl.engine.trainer", "adapmtl.inference.compile"} <= set(_modules())


def test_every_module_imports_first_in_a_fresh_interpreter():
    done = subprocess.run([sys.executable, "-c", CHILD_PER_MODULE, *_modules()], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == []
