"""The method figure's script runs and writes a PNG."""
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "imgs" / "draw_method.py"


def test_method_figure_is_drawn(tmp_path):
    out = tmp_path / "figure" / "method.png"
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True, cwd=tmp_path, timeout=120,
                   capture_output=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000
