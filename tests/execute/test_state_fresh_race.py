"""Two processes opening a fresh state directory at once both get a working WAL database."""

from __future__ import annotations

import subprocess
import sys


def test_two_first_opens_of_a_fresh_data_dir_both_succeed(tmp_path):
    code = (
        "import sys; from pathlib import Path; from app.execute.state import connect; "
        "c = connect(Path(sys.argv[1]) / 'state.db'); "
        "print(c.execute('PRAGMA journal_mode').fetchone()[0])"
    )
    for round_ in range(5):
        data = tmp_path / f"d{round_}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(data)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert out.strip() == "wal"
