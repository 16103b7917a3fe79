"""Run one of the seeds' own TensorFlow models (``../shared/peers``) in its virtual environment.

The benchmarks compare cxrkit with these peers side by side; each peer script prints JSON lines, the last
``"summary"`` line holding its figures.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PEERS = Path(__file__).resolve().parent.parent.parent / "shared" / "peers"


def run_peer(script: str, peer_venv: str, data: str, epochs: int) -> dict | None:
    """The peer's summary dict, or None (with a note on stderr) when its venv or script is missing."""
    venv_py = Path(peer_venv) / "bin" / "python"
    path = PEERS / script
    if not venv_py.is_file() or not path.is_file():
        print(f"(no peer {script}: {venv_py} or {path} missing; create it with bash {PEERS}/run_peers.sh)",
              file=sys.stderr)
        return None
    # the peer runs with its own allocator, whatever malloc settings the benchmark was started with
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    out = subprocess.run([str(venv_py), str(path), "--data", str(Path(data).resolve()), "--epochs", str(epochs)],
                         capture_output=True, text=True, cwd=PEERS, env=env)
    if out.returncode:
        sys.exit(f"peer {script} failed:\n{out.stderr[-3000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if '"summary"' in line][-1]
