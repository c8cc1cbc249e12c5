"""Inductor's and Triton's caches live in the cache root; importing the cache stays cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from compile_cache import configure_tool_caches
from kiln import env


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
