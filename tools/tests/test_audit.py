"""The dependency gate's decisions on pip-audit's JSON report (the report format of pip-audit 2.x)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orgdir_tools.audit import evaluate, read_exceptions

REPORT = {
    "dependencies": [
        {"name": "jinja2", "version": "2.10", "vulns": [
            {"id": "PYSEC-2019-217", "fix_versions": ["2.10.1"], "aliases": ["CVE-2019-10906", "GHSA-462w-v97r-4m45"]},
            {"id": "GHSA-h5c8-rqwp-cp95", "fix_versions": ["3.1.3"], "aliases": ["CVE-2024-22195"]},
        ]},
        {"name": "httpx", "version": "0.28.1", "vulns": []},
        {"name": "aio-pika", "skip_reason": "Dependency not found on PyPI and could not be audited: aio-pika (10.2.1)"},
    ],
    "fixes": [],
}


def test_a_vulnerability_fails_unless_excepted_by_id_or_alias() -> None:
    out = evaluate(REPORT, {})
    assert len(out.vulnerable) == 2 and out.checked == 2 and len(out.unchecked) == 1
    out = evaluate(REPORT, {"CVE-2019-10906": "sandbox not used", "OLD-1": "gone"})
    assert out.vulnerable == ["jinja2 2.10: GHSA-h5c8-rqwp-cp95 (fixed in: 3.1.3)"]
    assert out.excepted and "sandbox not used" in out.excepted[0]
    assert out.stale_exceptions == ["OLD-1"]


def test_an_exception_needs_a_reason(tmp_path: Path) -> None:
    f = tmp_path / "exceptions.txt"
    f.write_text("# comment\n\nPYSEC-2019-217  only templates we write ourselves, until 2027-06\n")
    assert read_exceptions(f) == {"PYSEC-2019-217": "only templates we write ourselves, until 2027-06"}
    f.write_text("PYSEC-2019-217\n")
    with pytest.raises(SystemExit, match="has no reason"):
        read_exceptions(f)
