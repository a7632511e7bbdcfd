"""``/api/v1/docs`` works without internet: Swagger UI's script, styles and icon are served by the
service itself (``orgdir.http.install_docs``), never loaded from a CDN."""

from __future__ import annotations

import re

import httpx

from orgdir.http import create_app


async def test_docs_page_references_only_assets_the_service_serves() -> None:
    app = create_app("toy")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        page = await http.get("/api/v1/docs")
        assert page.status_code == 200 and "SwaggerUIBundle" in page.text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        urls += re.findall(r"""url: ?["']([^"']+)["']""", page.text)  # the OpenAPI document it loads
        assert "/api/v1/openapi.json" in urls
        assert {u for u in urls if not u.startswith("/")} == set(), urls
        types = {}
        for url in urls:
            r = await http.get(url)
            assert r.status_code == 200, url
            types[url.rsplit(".", 1)[-1]] = r.headers["content-type"]
        assert types["js"].startswith(("text/javascript", "application/javascript"))
        assert types["css"].startswith("text/css") and types["png"] == "image/png"
        bundle = await http.get("/api/v1/docs/assets/swagger-ui-bundle.js")
        assert len(bundle.content) > 500_000  # the real bundle, not a stub
        assert (await http.get("/docs/oauth2-redirect")).status_code == 200
