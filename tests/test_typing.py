import subprocess
import sys
from pathlib import Path


def test_package_type_checks_strictly() -> None:
    root = Path(__file__).parent.parent
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_nested_kvm_tool_type_checks_strictly() -> None:
    scripts = Path(__file__).parent.parent / "scripts"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "nested_kvm"], cwd=scripts, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
