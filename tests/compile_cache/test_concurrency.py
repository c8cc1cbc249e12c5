"""Two processes asking for one key: exactly one builds, both get the same entry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cache_helpers import key_and_factors

# Each worker appends to a counter file while building; the sleep makes the second worker
# arrive while the first holds the lock.
WORKER = """
import json, sys, time
from pathlib import Path
from compile_cache import Store

root, key, factors, counter = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), Path(sys.argv[4])

def build(staging):
    with open(counter, "a") as f:
        f.write("built\\n")
    time.sleep(1.0)
    (staging / "code.py").write_text("X = 3\\n")
    return {"model": "tiny"}

artifact, built = Store(root).get_or_build(key, factors, build)
print(json.dumps({"built": built, "build_id": artifact.manifest["build_id"]}))
"""


def test_two_processes_build_one_key_once(tmp_path):
    key, factors = key_and_factors("tiny", seed=21)
    counter = tmp_path / "builds.txt"
    root = tmp_path / "compile"
    repo = Path(__file__).resolve().parents[2]
    args = [sys.executable, "-c", WORKER, str(root), key, json.dumps(factors), str(counter)]
    workers = [
        subprocess.Popen(args, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        results.append(json.loads(out))
    assert counter.read_text().splitlines() == ["built"]
    assert sorted(r["built"] for r in results) == [False, True]
    assert results[0]["build_id"] == results[1]["build_id"]
