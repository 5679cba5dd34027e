"""The README is part of the interface: it must name every setting the code reads."""

from pathlib import Path

from webapp.config import SETTINGS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_documents_every_setting():
    missing = [s.name for s in SETTINGS if f"| `{s.name}` |" not in README]
    assert missing == []


def test_readme_quick_start_commands_exist():
    root = Path(__file__).resolve().parent.parent
    for script in ("start.sh", "test.sh", "stop.sh"):
        assert f"./{script}" in README
        assert (root / script).stat().st_mode & 0o111, f"{script} is not executable"
