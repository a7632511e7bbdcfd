"""axe-core for the browser tests: the npm package, fetched on first use from the npm registry into
``.tools/axe-core/<version>/`` (checked against the pinned integrity), then injected into a page.

Like chromium, nothing is vendored in the repository and nothing is fetched by the portal at run time;
the version is pinned so a new axe rule cannot turn the suite red by itself.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from selenium.webdriver.remote.webdriver import WebDriver

from orgdir_tools.localservers import progress, repo_root

VERSION = "4.14.1"
INTEGRITY = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
REGISTRY = os.environ.get("npm_config_registry") or os.environ.get("NPM_CONFIG_REGISTRY") or "https://registry.npmjs.org"
SERIOUS = ("critical", "serious")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure_axe() -> Path:
    """``axe.min.js`` of the pinned axe-core, downloaded once (about 600 kB) and reused."""
    home = repo_root() / ".tools" / "axe-core" / VERSION
    script = home / "axe.min.js"
    with _locked(home.parent / ".install.lock"):
        if script.is_file():
            return script
        url = f"{REGISTRY.rstrip('/')}/axe-core/-/axe-core-{VERSION}.tgz"
        progress(f"fetching axe-core {VERSION} from {url}")
        tarball = httpx.get(url, timeout=120, follow_redirects=True).raise_for_status().content
        algorithm, _, expected = INTEGRITY.partition("-")
        got = base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode()
        if got != expected:
            raise AssertionError(f"axe-core {VERSION} from {url} does not match the pinned integrity")
        home.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
            for name in ("axe.min.js", "LICENSE"):
                member = tar.extractfile(f"package/{name}")
                assert member is not None, name
                (home / f"{name}.part").write_bytes(member.read())
                (home / f"{name}.part").replace(home / name)
        return script


def serious_violations(driver: WebDriver) -> list[dict[str, Any]]:
    """Inject axe into the page as it is now and run every WCAG 2.x A/AA rule; the critical and serious
    violations, each with the elements it found."""
    driver.execute_script(ensure_axe().read_text())
    result: dict[str, Any] = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations'], runOnly: {type: 'tag',"
        " values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']}})"
        ".then(r => done({violations: r.violations}), e => done({error: String(e)}));"
    )
    if "error" in result:
        raise AssertionError(f"axe failed: {result['error']}")
    return [v for v in result["violations"] if v.get("impact") in SERIOUS]


def describe(violations: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{v['impact']}: {v['id']} ({v['help']}): " + "; ".join(n["target"][0] for n in v["nodes"][:5])
        for v in violations
    )
