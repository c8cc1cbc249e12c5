"""Inductor's, Triton's and (where Python keeps none) bytecode caches live in the cache root;
importing the cache stays cheap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from compile_cache import configure_tool_caches
from kiln import env

ROOT = Path(__file__).resolve().parents[2]


def test_tool_caches_point_inside_the_root(tmp_path, monkeypatch):
    monkeypatch.delenv(env.INDUCTOR_CACHE_ENV, raising=False)
    monkeypatch.delenv(env.TRITON_CACHE_ENV, raising=False)
    dirs = configure_tool_caches(tmp_path)
    assert dirs == {
        "TORCHINDUCTOR_CACHE_DIR": tmp_path / "inductor",
        "TRITON_CACHE_DIR": tmp_path / "triton",
    }
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "triton")


def test_a_users_own_setting_is_kept_unless_overridden(tmp_path, monkeypatch):
    mine = tmp_path / "my-inductor"
    monkeypatch.setenv(env.INDUCTOR_CACHE_ENV, str(mine))
    monkeypatch.delenv(env.TRITON_CACHE_ENV, raising=False)
    assert configure_tool_caches(tmp_path)["TORCHINDUCTOR_CACHE_DIR"] == mine
    forced = configure_tool_caches(tmp_path, override=True)
    assert forced["TORCHINDUCTOR_CACHE_DIR"] == tmp_path / "inductor"


def test_default_root_follows_kiln_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(env.TRITON_CACHE_ENV, raising=False)
    assert (
        configure_tool_caches(override=True)["TRITON_CACHE_DIR"] == tmp_path / "compile" / "triton"
    )


def test_importing_the_cache_and_its_cli_imports_no_torch():
    code = (
        "import sys, compile_cache, compile_cache.store, kiln.commands.cache\n"
        "heavy = [m for m in ('torch', 'triton', 'helion', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


BYTECODE_PROBE = """
import json, sys
from pathlib import Path
from compile_cache import configure_bytecode_cache
folder = configure_bytecode_cache(Path(sys.argv[1]), probe="slowpkg")
import os, slowpkg
print(json.dumps([str(folder) if folder else None, sys.dont_write_bytecode,
                  os.environ.get("PYTHONPYCACHEPREFIX"),
                  os.environ.get("PYTHONDONTWRITEBYTECODE")]))
"""


def _bytecode_probe(tmp_path, extra_env: dict, *, with_pyc: bool = False) -> tuple[list, Path]:
    src = tmp_path / "src" / "slowpkg"
    src.mkdir(parents=True, exist_ok=True)
    (src / "__init__.py").write_text("VALUE = 1\n")
    if with_pyc:
        import py_compile

        py_compile.compile(str(src / "__init__.py"))
    penv = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    penv.update(PYTHONPATH=f"{tmp_path / 'src'}{os.pathsep}{ROOT}", **extra_env)
    proc = subprocess.run(
        [sys.executable, "-c", BYTECODE_PROBE, str(tmp_path / "cache")],
        capture_output=True, text=True, env=penv, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), src


def test_bytecode_is_kept_in_the_cache_when_python_would_not_write_it(tmp_path):
    (folder, dont_write, exported, child_dont_write), src = _bytecode_probe(
        tmp_path, {"PYTHONDONTWRITEBYTECODE": "1"}
    )
    assert folder == str(tmp_path / "cache" / "pycache") and dont_write is False
    assert exported == folder  # children read and write the same bytecode ...
    assert child_dont_write is None  # ... from their first import on
    assert list(Path(folder).rglob("__init__*.pyc")), "the import wrote no bytecode there"
    assert not (src / "__pycache__").exists()  # the package's own folder is never written


def test_a_kiln_child_keeps_writing_to_the_inherited_prefix(tmp_path):
    ours = str(tmp_path / "cache" / "pycache")
    env = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": ours}
    (folder, dont_write, _, _), _ = _bytecode_probe(tmp_path, env)
    assert folder == ours and dont_write is False
    assert list(Path(ours).rglob("__init__*.pyc"))
    other = str(tmp_path / "users-own")
    got, _ = _bytecode_probe(
        tmp_path / "b", {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": other}
    )
    assert got == [None, True, other, "1"]  # a prefix the user chose is left alone


def test_bytecode_cache_left_alone_when_python_can_reuse_its_own(tmp_path):
    got, _ = _bytecode_probe(tmp_path, {"PYTHONDONTWRITEBYTECODE": "1"}, with_pyc=True)
    assert got == [None, True, None, "1"]  # existing __pycache__ serves; the user's setting stands
    got, _ = _bytecode_probe(
        tmp_path / "b", {"PYTHONDONTWRITEBYTECODE": "1", "KILN_BYTECODE_CACHE": "0"}
    )
    assert got == [None, True, None, "1"]


def test_a_child_started_under_the_prefix_writes_its_startup_modules(tmp_path):
    """The environment a Kiln process leaves lets a child it starts write bytecode for the
    modules the child imports before any Kiln code runs (its next start reads them)."""
    code = (
        "import subprocess, sys; from pathlib import Path; "
        "from compile_cache import configure_bytecode_cache; "
        "configure_bytecode_cache(Path(sys.argv[1]), probe='slowpkg'); "
        "subprocess.run([sys.executable, '-c', 'import argparse'], check=True)"
    )
    src = tmp_path / "src" / "slowpkg"  # a package without bytecode, as torch on the image
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("VALUE = 1\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    env.update(PYTHONPATH=f"{src.parent}{os.pathsep}{ROOT}", PYTHONDONTWRITEBYTECODE="1")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, check=True, timeout=120)
    folder = tmp_path / "pycache"
    # argparse is imported only by the child, and only before it could run any code of ours
    assert list(folder.rglob("argparse*.pyc")), "the child compiled argparse without keeping it"
