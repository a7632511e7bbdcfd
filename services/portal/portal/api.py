"""The pages: a module-level router; each route asks the APIs (``service``) and renders a template.

Full pages for navigation, fragments (``_*.html``) for htmx: the tree's branches, search as you type,
the unit and person pickers of the forms. Forms are plain POSTs: on a problem the page comes back
(422) with the server's message beside the input it names, and nothing was written; on success a
303 to the page of what changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from orgdir.auth import expand
from portal import service
from portal.clients import ApiError, Apis
from portal.i18n import pick_language, translator
from portal.oidc import Oidc, SignInError
from portal.service import Form as FormState
from portal.settings import PortalSettings

router = APIRouter()
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
LANG_COOKIE = "orgdir_lang"


class SignInRequired(Exception):
    """No session: the user is sent to the sign-in page and back."""


@dataclass
class Page:
    """What every page knows: the request, the user's language, day, token and roles."""

    request: Request
    settings: PortalSettings
    lang: str
    t: Callable[[str], str]
    day: date
    today: date
    at: str | None
    user: dict[str, Any] | None

    @property
    def apis(self) -> Apis:
        if not self.user:
            raise SignInRequired()
        apis: Apis = self.request.app.state.clients.for_token(self.user["token"])
        return apis

    def may(self, role: str) -> bool:
        return self.user is not None and role in expand(self.user.get("roles", []))

    def link(self, path: str, **params: Any) -> str:
        """An in-portal link that keeps the day being viewed."""
        query = {"at": self.at, **params}
        clean = {k: v for k, v in query.items() if v not in (None, "", False)}
        return f"{path}?{urlencode(clean)}" if clean else path

    @property
    def other_language(self) -> str:
        return "en" if self.lang == "da" else "da"

    def switch_language(self) -> str:
        """This page in the other language (remembered in a cookie from then on)."""
        query = {**self.request.query_params, "lang": self.other_language}
        return f"{self.request.url.path}?{urlencode(query)}"

    def flash(self) -> str | None:
        """A note left by the previous request (a write that succeeded), shown once."""
        note: str | None = self.request.session.pop("flash", None)
        return note

    def render(self, name: str, context: dict[str, Any] | None = None, status: int = 200) -> HTMLResponse:
        ctx = {"page": self, "t": self.t, "link": self.link, **(context or {})}
        response = templates.TemplateResponse(self.request, name, ctx, status_code=status)
        if self.request.query_params.get("lang") == self.lang:
            response.set_cookie(LANG_COOKIE, self.lang, max_age=365 * 24 * 3600, samesite="lax")
        return response


def _today(settings: PortalSettings) -> date:
    return datetime.now(ZoneInfo(settings.timezone)).date()


def page_of(request: Request) -> Page:
    settings: PortalSettings = request.app.state.settings
    lang = pick_language(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE), settings.default_language)
    today = _today(settings)
    at = request.query_params.get("at") or None
    day = today
    if at:
        try:
            day = date.fromisoformat(at)
        except ValueError:
            at = None
    user = request.session.get("user")
    if user and user.get("exp") and user["exp"] < datetime.now().timestamp():  # the access token ran out
        request.session.pop("user", None)
        user = None
    return Page(request, settings, lang, translator(lang), day, today, at, user)


async def page(request: Request) -> Page:
    return page_of(request)


P = Annotated[Page, Depends(page)]


async def signed_in(p: P) -> Page:
    if not p.user:
        raise SignInRequired()
    return p


User = Annotated[Page, Depends(signed_in)]


def install_errors(app: FastAPI) -> None:
    """An API's problem is shown on an error page in the user's language; no session is a sign-in."""

    @app.exception_handler(SignInRequired)
    async def on_signin(request: Request, exc: SignInRequired) -> Response:
        """To the sign-in page, or with OIDC straight to the issuer (which may know the user already)."""
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        start = "/login" if request.app.state.oidc else "/signin"
        return _redirect(f"{start}?{urlencode({'next': target})}", request)

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> Response:
        if exc.status == 401:  # the token is no longer accepted: sign in again
            request.session.pop("user", None)
            return await on_signin(request, SignInRequired())
        p = page_of(request)
        titles = {403: "error.forbidden", 404: "error.not_found", 503: "error.unavailable"}
        title = titles.get(exc.status, "error.title")
        return p.render("error.html", {"title": p.t(title), "problem": exc.problem, "status": exc.status}, exc.status)


def _redirect(url: str, request: Request) -> Response:
    """303 for a page request; for htmx a full navigation (HX-Redirect) instead of a swapped fragment."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def _saved(p: Page, path: str, effective: str | None) -> Response:
    """After a write: back to the page at the day being viewed, with a note from when the change holds
    (a change from a later day shows there only when the date picker reaches it)."""
    note = p.t("saved")
    if effective:
        note += f" {p.t('effective_from')} {effective}."
    p.request.session["flash"] = note
    return RedirectResponse(p.link(path), status_code=303)


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/") and not target.startswith("//") else "/units"


# ---------------------------------------------------------------------------- sign-in


@router.get("/", include_in_schema=False)
async def home(p: P) -> Response:
    return RedirectResponse(p.link("/units"), status_code=303)


@router.get("/signin", response_class=HTMLResponse)
async def signin_form(p: P, next: str | None = None) -> HTMLResponse:
    tokens = p.settings.dev_tokens() if p.settings.static_mode else []
    return p.render("signin.html", {"tokens": tokens, "next": _safe_next(next), "oidc": _oidc(p) is not None})


def _oidc(p: Page) -> Oidc | None:
    oidc: Oidc | None = p.request.app.state.oidc
    return oidc


def _callback_url(p: Page) -> str:
    return p.settings.oidc_redirect_url or str(p.request.url_for("oidc_callback"))


@router.get("/login")
async def login(p: P, next: str | None = None) -> Response:
    """OIDC: off to the issuer with state, nonce and the PKCE challenge (the secrets wait in the cookie)."""
    oidc = _oidc(p)
    if oidc is None:
        return RedirectResponse(f"/signin?{urlencode({'next': _safe_next(next)})}", status_code=303)
    try:
        url = await oidc.authorize_url(p.request.session, _callback_url(p), _safe_next(next))
    except SignInError as exc:
        return p.render("signin.html", {"tokens": [], "next": _safe_next(next), "oidc": True, "error": str(exc)}, 503)
    return RedirectResponse(url, status_code=303)


@router.get("/callback", name="oidc_callback")
async def callback(p: P) -> Response:
    """OIDC: the code for tokens (with the PKCE verifier); the user's session starts afresh."""
    oidc = _oidc(p)
    if oidc is None:
        return RedirectResponse("/signin", status_code=303)
    try:
        user, target = await oidc.complete(p.request.session, dict(p.request.query_params))
    except SignInError as exc:
        return p.render("signin.html", {"tokens": [], "next": "/units", "oidc": True, "error": str(exc)}, 400)
    p.request.session.clear()  # nothing from before the sign-in carries over
    p.request.session["user"] = user
    return RedirectResponse(_safe_next(target), status_code=303)


@router.post("/signin")
async def signin(p: P, token: Annotated[str, Form()], next: Annotated[str | None, Form()] = None) -> Response:
    """Local mode: the chosen dev token becomes the session's bearer token (its roles hide what it may not do)."""
    if not p.settings.static_mode:
        return p.render("signin.html", {"tokens": [], "next": _safe_next(next)}, 400)
    match = [(n, static) for n, static in p.settings.tokens().items() if static.token == token]
    if not match:
        tokens = p.settings.dev_tokens()
        return p.render("signin.html", {"tokens": tokens, "next": _safe_next(next), "unknown": True}, 400)
    name, static = match[0]
    p.request.session["user"] = {"name": name, "token": static.token, "roles": list(static.roles)}
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/signout")
async def signout(p: P) -> Response:
    """The session cookie goes; with OIDC the issuer's session too (RP-initiated logout), if it offers that."""
    p.request.session.clear()
    oidc = _oidc(p)
    if oidc is not None:
        end = await oidc.logout_url(str(p.request.url_for("signin_form")))
        if end:
            return RedirectResponse(end, status_code=303)
    return RedirectResponse("/signin", status_code=303)


# ---------------------------------------------------------------------------- tree and search


@router.get("/units", response_class=HTMLResponse)
async def tree(p: User) -> HTMLResponse:
    return p.render("tree.html", await service.tree(p.apis, p.day))


@router.get("/units/search", response_class=HTMLResponse)
async def unit_search(p: User, q: str = "") -> HTMLResponse:
    return p.render("_unit_search.html", {"q": q, "units": await service.search_units(p.apis, q, p.day)})


@router.get("/units/new", response_class=HTMLResponse)
async def new_unit_form(p: User, parent: str | None = None) -> HTMLResponse:
    form = FormState(values={"parent": parent or "", "from": p.day.isoformat()})
    return await _unit_form(p, form)


async def _unit_form(p: Page, form: FormState, status: int = 200) -> HTMLResponse:
    types = await service.classes_of(p.apis, "unit_type", p.day)
    parent = form.values.get("parent")
    parent_unit = await p.apis.orgunits.get_or_none(f"/orgunits/{parent}", at=p.day) if parent else None
    return p.render("form_unit.html", {"form": form, "types": types, "parent_unit": parent_unit}, status)


@router.post("/units/new", response_class=HTMLResponse)
async def create_unit(
    p: User,
    name: Annotated[str, Form()] = "",
    user_key: Annotated[str, Form()] = "",
    unit_type: Annotated[str, Form()] = "",
    parent: Annotated[str, Form()] = "",
    from_: Annotated[str, Form(alias="from")] = "",
) -> Response:
    form = FormState(values={"name": name, "user_key": user_key, "unit_type": unit_type, "parent": parent,
                             "from": from_})
    if not service.required(form, "name", "user_key", message=p.t("form.required")):
        return await _unit_form(p, form, 422)
    try:
        unit = await service.create_unit(p.apis, form)
    except ApiError as exc:
        form.errors = _form_errors(p, exc, ["name", "user_key", "unit_type", "parent", "from"])
        return await _unit_form(p, form, 422)
    return _saved(p, f"/units/{unit['uuid']}", from_)


@router.get("/units/{uid}/children", response_class=HTMLResponse)
async def unit_children(p: User, uid: str) -> HTMLResponse:
    return p.render("_tree_children.html", {"nodes": await service.children(p.apis, uid, p.day)})


# ---------------------------------------------------------------------------- unit page


@router.get("/units/{uid}", response_class=HTMLResponse)
async def unit(p: User, uid: str, subtree: bool = False) -> HTMLResponse:
    data = await service.unit_page(p.apis, uid, p.day, subtree=subtree)
    return p.render("unit.html", data, 200 if data["unit"] else 404)


@router.get("/units/{uid}/people", response_class=HTMLResponse)
async def unit_people(p: User, uid: str, subtree: bool = False, cursor: str | None = None) -> HTMLResponse:
    data = await service.unit_people(p.apis, uid, p.day, subtree=subtree, cursor=cursor)
    return p.render("_people.html", data)


async def _unit_or_404(p: Page, uid: str) -> dict[str, Any]:
    unit: dict[str, Any] = await p.apis.orgunits.get(f"/orgunits/{uid}", at=p.day)
    return unit


@router.get("/units/{uid}/move", response_class=HTMLResponse)
async def move_form(p: User, uid: str) -> HTMLResponse:
    unit = await _unit_or_404(p, uid)
    form = FormState(values={"from": p.day.isoformat(), "version": str(unit["version"])})
    return p.render("form_move.html", {"unit": unit, "form": form})


@router.post("/units/{uid}/move", response_class=HTMLResponse)
async def move(
    p: User, uid: str,
    parent: Annotated[str, Form()] = "",
    from_: Annotated[str, Form(alias="from")] = "",
    version: Annotated[str, Form()] = "",
) -> Response:
    unit = await _unit_or_404(p, uid)
    form = FormState(values={"parent": parent, "from": from_, "version": version})
    try:
        await service.move_unit(p.apis, uid, form)
    except ApiError as exc:
        form.errors = _form_errors(p, exc, ["parent", "from"])
        chosen = await p.apis.orgunits.get_or_none(f"/orgunits/{parent}", at=p.day) if parent else None
        return p.render("form_move.html", {"unit": unit, "form": form, "chosen": chosen}, 422)
    return _saved(p, f"/units/{uid}", from_)


@router.get("/units/{uid}/rename", response_class=HTMLResponse)
async def rename_form(p: User, uid: str) -> HTMLResponse:
    unit = await _unit_or_404(p, uid)
    form = FormState(values={"name": unit["name"], "from": p.day.isoformat(), "version": str(unit["version"])})
    return p.render("form_rename.html", {"unit": unit, "form": form})


@router.post("/units/{uid}/rename", response_class=HTMLResponse)
async def rename(
    p: User, uid: str,
    name: Annotated[str, Form()] = "",
    from_: Annotated[str, Form(alias="from")] = "",
    version: Annotated[str, Form()] = "",
) -> Response:
    """A new name from a day; ``If-Match`` with the version the form showed, so a change in between is told."""
    unit = await _unit_or_404(p, uid)
    form = FormState(values={"name": name, "from": from_, "version": version})
    if not service.required(form, "name", message=p.t("form.required")):
        return p.render("form_rename.html", {"unit": unit, "form": form}, 422)
    try:
        await service.rename_unit(p.apis, uid, form)
    except ApiError as exc:
        form.errors = _form_errors(p, exc, ["name", "from"])  # a 412: changed since the form was opened
        return p.render("form_rename.html", {"unit": unit, "form": form}, 422)
    return _saved(p, f"/units/{uid}", from_)


@router.get("/units/{uid}/terminate", response_class=HTMLResponse)
async def terminate_form(p: User, uid: str) -> HTMLResponse:
    unit = await _unit_or_404(p, uid)
    form = FormState(values={"to": p.day.isoformat(), "version": str(unit["version"])})
    return p.render("form_terminate.html", {"unit": unit, "form": form})


@router.post("/units/{uid}/terminate", response_class=HTMLResponse)
async def terminate(
    p: User, uid: str, to: Annotated[str, Form()] = "", version: Annotated[str, Form()] = ""
) -> Response:
    unit = await _unit_or_404(p, uid)
    form = FormState(values={"to": to, "version": version})
    if not service.required(form, "to", message=p.t("form.required")):
        return p.render("form_terminate.html", {"unit": unit, "form": form}, 422)
    try:
        await service.terminate_unit(p.apis, uid, form)
    except ApiError as exc:
        form.errors = _form_errors(p, exc, ["to"])
        return p.render("form_terminate.html", {"unit": unit, "form": form}, 422)
    return _saved(p, f"/units/{uid}", to)


async def _hire_page(p: Page, unit: dict[str, Any], form: FormState, status: int = 200) -> HTMLResponse:
    jobs, types = await service.gather(
        service.classes_of(p.apis, "job_function", p.day), service.classes_of(p.apis, "engagement_type", p.day)
    )
    person = form.values.get("person")
    chosen = await p.apis.registry.get_or_none(f"/persons/{person}", at=p.day) if person else None
    return p.render(
        "form_hire.html", {"unit": unit, "form": form, "jobs": jobs, "types": types, "chosen": chosen}, status
    )


@router.get("/units/{uid}/hire", response_class=HTMLResponse)
async def hire_form(p: User, uid: str) -> HTMLResponse:
    unit = await _unit_or_404(p, uid)
    return await _hire_page(p, unit, FormState(values={"from": p.day.isoformat(), "primary": "on"}))


@router.post("/units/{uid}/hire", response_class=HTMLResponse)
async def hire(
    p: User, uid: str,
    person: Annotated[str, Form()] = "",
    job_function: Annotated[str, Form()] = "",
    engagement_type: Annotated[str, Form()] = "",
    primary: Annotated[str, Form()] = "",
    from_: Annotated[str, Form(alias="from")] = "",
) -> Response:
    unit = await _unit_or_404(p, uid)
    form = FormState(values={"person": person, "job_function": job_function, "engagement_type": engagement_type,
                             "primary": primary, "from": from_})
    if not service.required(form, "person", message=p.t("form.required")):
        return await _hire_page(p, unit, form, 422)
    try:
        await service.hire(p.apis, uid, form)
    except ApiError as exc:
        form.errors = _form_errors(p, exc, ["person", "job_function", "engagement_type", "from"])
        return await _hire_page(p, unit, form, 422)
    return _saved(p, f"/units/{uid}", from_)


def _form_errors(p: Page, exc: ApiError, inputs: list[str], stale: str = "form.stale") -> dict[str, str]:
    """The problem beside the inputs it names; a 412 (``If-Match``: changed by someone else since the
    form was opened) for the form as a whole. No session, no access, no service: not a form matter."""
    if exc.status in (401, 403, 503):
        raise exc
    if exc.status == 412:
        return {"": f"{p.t(stale)} ({exc.detail})"}
    return service.field_errors(exc, inputs)


# ---------------------------------------------------------------------------- engagements: change and end


async def _engagement(p: Page, eid: str) -> tuple[dict[str, Any], service.Names]:
    """The engagement as on the day viewed, with the names of its person, unit and classes."""
    eng: dict[str, Any] = await p.apis.registry.get(f"/engagements/{eid}", at=p.day)
    names = service.Names(p.apis, p.day)
    await names.resolve(persons=[eng["person"]], units=[eng["unit"]],
                        classes=[eng.get("job_function"), eng.get("engagement_type")])
    return eng, names


ENGAGEMENT_INPUTS = ["unit", "job_function", "engagement_type", "primary", "from"]


async def _change_page(
    p: Page, eng: dict[str, Any], names: service.Names, form: FormState, status: int = 200
) -> HTMLResponse:
    jobs, types = await service.gather(
        service.classes_of(p.apis, "job_function", p.day), service.classes_of(p.apis, "engagement_type", p.day)
    )
    chosen_uid = form.values.get("unit") or eng["unit"]
    chosen = await p.apis.orgunits.get_or_none(f"/orgunits/{chosen_uid}", at=p.day)
    ctx = {"eng": eng, "names": names, "form": form, "jobs": jobs, "types": types, "chosen": chosen}
    return p.render("form_engagement.html", ctx, status)


@router.get("/engagements/{eid}/change", response_class=HTMLResponse)
async def change_engagement_form(p: User, eid: str) -> HTMLResponse:
    eng, names = await _engagement(p, eid)
    form = FormState(values={
        "unit": eng["unit"], "job_function": eng["job_function"], "engagement_type": eng["engagement_type"],
        "primary": "on" if eng.get("primary") else "", "from": p.day.isoformat(), "version": str(eng["version"]),
    })
    return await _change_page(p, eng, names, form)


@router.post("/engagements/{eid}/change", response_class=HTMLResponse)
async def change_engagement(
    p: User, eid: str,
    unit: Annotated[str, Form()] = "",
    job_function: Annotated[str, Form()] = "",
    engagement_type: Annotated[str, Form()] = "",
    primary: Annotated[str, Form()] = "",
    from_: Annotated[str, Form(alias="from")] = "",
    version: Annotated[str, Form()] = "",
) -> Response:
    """Another unit, job function, type or primary flag from a day on; only what changed is sent, with
    ``If-Match`` (the version the form showed)."""
    eng, names = await _engagement(p, eid)
    form = FormState(values={"unit": unit, "job_function": job_function, "engagement_type": engagement_type,
                             "primary": primary, "from": from_, "version": version})
    changes = service.engagement_changes(form, eng)
    if not service.required(form, "from", message=p.t("form.required")):
        return await _change_page(p, eng, names, form, 422)
    if not changes:
        form.errors = {"": p.t("form.no_change")}
        return await _change_page(p, eng, names, form, 422)
    try:
        await service.change_engagement(p.apis, eid, form, changes)
    except ApiError as exc:
        form.errors = _form_errors(p, exc, ENGAGEMENT_INPUTS, "form.stale_engagement")
        return await _change_page(p, eng, names, form, 422)
    return _saved(p, f"/persons/{eng['person']}", from_)


@router.get("/engagements/{eid}/terminate", response_class=HTMLResponse)
async def end_engagement_form(p: User, eid: str) -> HTMLResponse:
    eng, names = await _engagement(p, eid)
    form = FormState(values={"to": p.day.isoformat(), "version": str(eng["version"])})
    return p.render("form_end_engagement.html", {"eng": eng, "names": names, "form": form})


@router.post("/engagements/{eid}/terminate", response_class=HTMLResponse)
async def end_engagement(
    p: User, eid: str, to: Annotated[str, Form()] = "", version: Annotated[str, Form()] = ""
) -> Response:
    """The engagement ends: ``to`` is the first day it no longer holds (``If-Match``: the version shown)."""
    eng, names = await _engagement(p, eid)
    form = FormState(values={"to": to, "version": version})
    if not service.required(form, "to", message=p.t("form.required")):
        return p.render("form_end_engagement.html", {"eng": eng, "names": names, "form": form}, 422)
    try:
        await service.terminate_engagement(p.apis, eid, form)
    except ApiError as exc:
        form.errors = _form_errors(p, exc, ["to"], "form.stale_engagement")
        return p.render("form_end_engagement.html", {"eng": eng, "names": names, "form": form}, 422)
    return _saved(p, f"/persons/{eng['person']}", to)


# ---------------------------------------------------------------------------- a manager for a unit


MANAGER_INPUTS = ["person", "manager_type", "manager_level", "responsibilities", "from", "to"]


async def _manager_page(
    p: Page, unit: dict[str, Any], form: FormState, chosen_responsibilities: list[str], status: int = 200
) -> HTMLResponse:
    types, levels, duties = await service.gather(
        service.classes_of(p.apis, "manager_type", p.day), service.classes_of(p.apis, "manager_level", p.day),
        service.classes_of(p.apis, "responsibility", p.day),
    )
    person = form.values.get("person")
    chosen = await p.apis.registry.get_or_none(f"/persons/{person}", at=p.day) if person else None
    ctx = {"unit": unit, "form": form, "types": types, "levels": levels, "duties": duties, "chosen": chosen,
           "chosen_duties": set(chosen_responsibilities)}
    return p.render("form_manager.html", ctx, status)


@router.get("/units/{uid}/manager", response_class=HTMLResponse)
async def manager_form(p: User, uid: str) -> HTMLResponse:
    unit = await _unit_or_404(p, uid)
    return await _manager_page(p, unit, FormState(values={"from": p.day.isoformat()}), [])


@router.post("/units/{uid}/manager", response_class=HTMLResponse)
async def add_manager(
    p: User, uid: str,
    person: Annotated[str, Form()] = "",
    manager_type: Annotated[str, Form()] = "",
    manager_level: Annotated[str, Form()] = "",
    responsibilities: Annotated[list[str] | None, Form()] = None,
    from_: Annotated[str, Form(alias="from")] = "",
    to: Annotated[str, Form()] = "",
) -> Response:
    """A manager position in the unit from a day (no person: vacant). One write: nothing is half-saved."""
    unit = await _unit_or_404(p, uid)
    duties = [d for d in responsibilities or [] if d]
    form = FormState(values={"person": person, "manager_type": manager_type, "manager_level": manager_level,
                             "from": from_, "to": to})
    if not service.required(form, "manager_type", "manager_level", "from", message=p.t("form.required")):
        return await _manager_page(p, unit, form, duties, 422)
    try:
        await service.add_manager(p.apis, uid, form, duties)
    except ApiError as exc:
        form.errors = _form_errors(p, exc, MANAGER_INPUTS)
        return await _manager_page(p, unit, form, duties, 422)
    return _saved(p, f"/units/{uid}", from_)


# ---------------------------------------------------------------------------- pickers (htmx fragments)


@router.get("/pick/units", response_class=HTMLResponse)
async def pick_units(p: User, name: Annotated[str, Query(pattern="^[a-z_]+$")] = "parent") -> HTMLResponse:
    """Radio buttons named ``name`` for the units matching the picker's search box (``<name>_q``)."""
    q = p.request.query_params.get(f"{name}_q", "")
    units = await service.search_units(p.apis, q, p.day)
    return p.render("_pick_units.html", {"units": units, "name": name, "q": q})


@router.get("/pick/persons", response_class=HTMLResponse)
async def pick_persons(p: User, q: Annotated[str, Query(alias="person_q")] = "") -> HTMLResponse:
    return p.render("_pick_persons.html", {"persons": await service.search_people(p.apis, q), "q": q})


# ---------------------------------------------------------------------------- people


@router.get("/persons", response_class=HTMLResponse)
async def persons(p: User, q: str = "") -> HTMLResponse:
    return p.render("persons.html", {"q": q, "persons": await service.search_people(p.apis, q)})


@router.get("/persons/{pid}", response_class=HTMLResponse)
async def person(p: User, pid: str) -> HTMLResponse:
    data = await service.person_page(p.apis, pid, p.day)
    return p.render("person.html", data, 200 if data["person"] else 404)


# ---------------------------------------------------------------------------- rights: approvals, batches, assignments


async def _rights_page(p: Page, errors: dict[str, str] | None = None, status: int = 200) -> HTMLResponse:
    data = await service.rights_page(p.apis, p.day)
    return p.render("rights.html", {**data, "errors": errors or {}}, status)


@router.get("/rights", response_class=HTMLResponse)
async def rights(p: User) -> HTMLResponse:
    return await _rights_page(p)


@router.post("/rights/assignments/{aid}/approve", response_class=HTMLResponse)
async def approve_assignment(p: User, aid: str) -> Response:
    """The four-eyes step; the service refuses the requester's own (shown beside that row)."""
    try:
        await service.approve(p.apis, aid)
    except ApiError as exc:
        if exc.status in (401, 503):
            raise
        return await _rights_page(p, {aid: exc.detail}, 422 if exc.status < 500 else exc.status)
    p.request.session["flash"] = p.t("rights.approved")
    return RedirectResponse(p.link("/rights"), status_code=303)


@router.post("/rights/assignments/{aid}/reject", response_class=HTMLResponse)
async def reject_assignment(p: User, aid: str, reason: Annotated[str, Form()] = "") -> Response:
    """Reject a pending sensitive assignment (with an optional reason); not by its requester."""
    try:
        await service.reject(p.apis, aid, reason)
    except ApiError as exc:
        if exc.status in (401, 503):
            raise
        return await _rights_page(p, {aid: exc.detail}, 422 if exc.status < 500 else exc.status)
    p.request.session["flash"] = p.t("rights.rejected")
    return RedirectResponse(p.link("/rights"), status_code=303)


@router.post("/rights/batches/{bid}/{decision}", response_class=HTMLResponse)
async def decide_batch(p: User, bid: str, decision: str) -> Response:
    """Release (the held revocations go out) or cancel (the rights stay) a batch the mass-change guard held."""
    if decision not in ("release", "cancel"):
        return await _rights_page(p, {bid: p.t("error.not_found")}, 404)
    try:
        await service.decide_batch(p.apis, bid, decision == "release")
    except ApiError as exc:
        if exc.status in (401, 503):
            raise
        return await _rights_page(p, {bid: exc.detail}, 422 if exc.status < 500 else exc.status)
    p.request.session["flash"] = p.t(f"rights.batch_{decision}d")
    return RedirectResponse(p.link("/rights"), status_code=303)


ASSIGN_INPUTS = ["what", "job_function", "inherit", "from", "to"]


async def _assign_page(
    p: Page, form: FormState, *, unit: dict[str, Any] | None = None, person: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    cat, jobs = await asyncio.gather(
        service.catalogue(p.apis, p.day), service.classes_of(p.apis, "job_function", p.day)
    )
    return p.render("form_assign.html", {"form": form, "unit": unit, "person": person, "jobs": jobs, **cat}, status)


def _assign_form(what: str, job_function: str, inherit: str, from_: str, to: str) -> FormState:
    return FormState(values={"what": what, "job_function": job_function, "inherit": inherit, "from": from_, "to": to})


@router.get("/units/{uid}/assign", response_class=HTMLResponse)
async def unit_assign_form(p: User, uid: str) -> HTMLResponse:
    unit = await _unit_or_404(p, uid)
    return await _assign_page(p, FormState(values={"from": p.day.isoformat(), "inherit": "on"}), unit=unit)


@router.post("/units/{uid}/assign", response_class=HTMLResponse)
async def unit_assign(
    p: User, uid: str,
    what: Annotated[str, Form()] = "",
    job_function: Annotated[str, Form()] = "",
    inherit: Annotated[str, Form()] = "",
    from_: Annotated[str, Form(alias="from")] = "",
    to: Annotated[str, Form()] = "",
) -> Response:
    """A role or role group to the unit (with or without its subtree), or to a job function within it."""
    unit = await _unit_or_404(p, uid)
    form = _assign_form(what, job_function, inherit, from_, to)
    if not service.required(form, "what", message=p.t("form.required")):
        return await _assign_page(p, form, unit=unit, status=422)
    try:
        await service.assign(p.apis, form, unit=uid)
    except ApiError as exc:
        form.errors = _form_errors(p, exc, ASSIGN_INPUTS)
        return await _assign_page(p, form, unit=unit, status=422)
    return _saved(p, f"/units/{uid}", from_)


@router.get("/persons/{pid}/assign", response_class=HTMLResponse)
async def person_assign_form(p: User, pid: str) -> HTMLResponse:
    person = await p.apis.registry.get(f"/persons/{pid}", at=p.day)
    return await _assign_page(p, FormState(values={"from": p.day.isoformat()}), person=person)


@router.post("/persons/{pid}/assign", response_class=HTMLResponse)
async def person_assign(
    p: User, pid: str,
    what: Annotated[str, Form()] = "",
    from_: Annotated[str, Form(alias="from")] = "",
    to: Annotated[str, Form()] = "",
) -> Response:
    """A role or role group to one person; a sensitive role then waits for a second person's approval."""
    person = await p.apis.registry.get(f"/persons/{pid}", at=p.day)
    form = _assign_form(what, "", "", from_, to)
    if not service.required(form, "what", message=p.t("form.required")):
        return await _assign_page(p, form, person=person, status=422)
    try:
        result = await service.assign(p.apis, form, person=pid)
    except ApiError as exc:
        form.errors = _form_errors(p, exc, ASSIGN_INPUTS)
        return await _assign_page(p, form, person=person, status=422)
    if service.first_slice(result).get("status") == "pending":
        p.request.session["flash"] = p.t("rights.now_pending")
        return RedirectResponse(p.link(f"/persons/{pid}"), status_code=303)
    return _saved(p, f"/persons/{pid}", from_)


# ---------------------------------------------------------------------------- operations (admin)


async def _operations_page(p: Page, errors: dict[str, str] | None = None, status: int = 200) -> HTMLResponse:
    data = await service.operations_page(p.apis)
    since = (p.today - timedelta(days=7)).isoformat()
    return p.render("operations.html", {**data, "errors": errors or {}, "since": since}, status)


def _admin_only(p: Page) -> None:
    """Operations are for administrators: others get the forbidden page, not a half-working one."""
    if not p.may("orgdir:admin"):
        raise ApiError(403, {"type": "urn:orgdir:problem:forbidden", "title": "Forbidden",
                             "detail": p.t("rights.needs_admin")})


@router.get("/operations", response_class=HTMLResponse)
async def operations(p: User) -> HTMLResponse:
    _admin_only(p)
    return await _operations_page(p)


@router.post("/operations/deliveries/{did}/replay", response_class=HTMLResponse)
async def replay_delivery(p: User, did: str) -> Response:
    """One failed delivery queued again (the notifier sends it, in order, with its retries)."""
    _admin_only(p)
    try:
        await service.replay_delivery(p.apis, did)
    except ApiError as exc:
        if exc.status in (401, 503):
            raise
        return await _operations_page(p, {did: exc.detail}, 422)
    p.request.session["flash"] = p.t("ops.replayed_one")
    return RedirectResponse(p.link("/operations"), status_code=303)


@router.post("/operations/subscriptions/{sid}/replay", response_class=HTMLResponse)
async def replay_subscription(p: User, sid: str, since: Annotated[str, Form()] = "") -> Response:
    """Every failed delivery to one target since a day, queued again."""
    _admin_only(p)
    if not since:
        return await _operations_page(p, {sid: p.t("form.required")}, 422)
    try:
        result = await service.replay_failed(p.apis, sid, since)
    except ApiError as exc:
        if exc.status in (401, 503):
            raise
        return await _operations_page(p, {sid: exc.detail}, 422)
    p.request.session["flash"] = f"{p.t('ops.replayed')}: {result.get('replayed', 0)}"
    return RedirectResponse(p.link("/operations"), status_code=303)
