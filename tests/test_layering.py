"""One-direction imports (DESIGN §3): vigorl_env never loads vigorl_agents, torch, transformers or vllm,
and nothing imports benchmarks/ or experiments/."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_ENV = {
    "vigorl_agents",
    "torch",
    "transformers",
    "vllm",
    "deepspeed",
    "benchmarks",
    "experiments",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_env_package_imports_stay_below_the_line():
    for path in (ROOT / "vigorl_env").rglob("*.py"):
        bad = _imports(path) & FORBIDDEN_IN_ENV
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_libraries_never_import_scripts():
    for pkg in ("vigorl_env", "vigorl_agents"):
        for path in (ROOT / pkg).rglob("*.py"):
            assert not _imports(path) & {"benchmarks", "experiments"}, path


def test_making_every_procedural_env_loads_no_heavy_module():
    code = (
        "import sys, gymnasium as gym, vigorl_env\n"
        "for i in vigorl_env.PROCEDURAL_IDS:\n"
        "    e = gym.make(i); e.reset(seed=0)\n"
        "heavy = {'torch', 'transformers', 'vllm', 'vigorl_agents'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
