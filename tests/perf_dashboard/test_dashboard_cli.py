"""`kiln dashboard`: writes the HTML, prints its path, refuses a missing --db."""

from __future__ import annotations

from kiln.cli import main


def test_dashboard_writes_html_and_prints_path(filled_store, tmp_path, capsys):
    out = tmp_path / "site" / "report.html"
    assert main(["dashboard", "--out", str(out), "--db", str(filled_store.path)]) == 0
    assert capsys.readouterr().out.strip() == str(out.resolve())
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and 'data-chart="compile-phases"' in html


def test_dashboard_uses_env_db_by_default(filled_store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KILN_DASHBOARD_DB", str(filled_store.path))
    out = tmp_path / "r.html"
    assert main(["dashboard", "--out", str(out)]) == 0
    assert "4 compile record(s), 2 bench record(s)" in out.read_text()


def test_missing_db_is_a_user_error(tmp_path, capsys):
    code = main(["dashboard", "--out", str(tmp_path / "r.html"), "--db", str(tmp_path / "no.db")])
    assert code == 2
    assert "no dashboard database" in capsys.readouterr().err
    assert not (tmp_path / "no.db").exists() and not (tmp_path / "r.html").exists()
