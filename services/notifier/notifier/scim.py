"""SCIM 2.0 outbound connector: persons with accounts as Users, roles as Groups.

Built on scim2-client / scim2-models. scim2-client's bundled engine needs
``httpx2``; Orgdir uses httpx, so ``HttpxSCIMClient`` is the three-method
engine over an ``httpx.AsyncClient`` (the same as the bundled one).

A SCIM delivery does not forward the event: it brings the target in line with
notifier's projections as they are when the delivery runs (converging on the
latest state), so ``access.granted`` arriving before ``account.requested`` is
harmless: the account's delivery syncs the groups of every role the person holds.
Operations for one target run ``scim_concurrency`` at a time on a replica, one
person's at a time (``key_of``: a User is built from several aggregates).
Groups are touched by many persons at once, so each Group write is checked
after it lands: a replace whose membership is no longer what the projections
say is sent again, and a member added by a PATCH who no longer belongs is
removed by a replace. The projections are those of the replica handling ``notifier.all``,
which records and sends nearly every delivery; any other replica catches them up
with the database before it builds what it sends and again before each of those
checks (``fresh``), so a check never compares against an older picture than the
one another replica sent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any, cast

import httpx
from scim2_client import BaseAsyncSCIMClient, RequestNetworkException, SCIMClientException
from scim2_client.errors import UnexpectedStatusCodeException
from scim2_models import (
    Email,
    EnterpriseUser,
    Group,
    GroupMember,
    ListResponse,
    Manager,
    Name,
    PatchOp,
    PatchOperation,
    PhoneNumber,
    SCIMException,
    SearchRequest,
    User,
)

from notifier import domain
from notifier.delivery import Pending
from notifier.readmodel import Projections
from notifier.settings import NotifierSettings
from notifier.store import Doc, ScimIds
from orgdir import visibility
from orgdir.clock import Clock

ScimUser = User[EnterpriseUser]
SYNC_ROUNDS = 5
CREATE_WAIT_SECONDS = 10.0


class StillChanging(Exception):
    """What was sent kept being overtaken by concurrent changes: the delivery is tried again later."""


class HttpxSCIMClient(BaseAsyncSCIMClient):
    """scim2-client over httpx; remembers the last HTTP status for error classification."""

    def __init__(self, client: httpx.AsyncClient, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client = client
        self.last_status: int | None = None

    def _stays_under_base_url(self, endpoint: str) -> bool:
        base = self.client.base_url
        try:
            url = self.client.build_request("GET", endpoint).url
        except httpx.InvalidURL:
            return False
        return (url.scheme, url.host, url.port) == (
            base.scheme,
            base.host,
            base.port,
        ) and url.raw_path.startswith(base.raw_path)

    def _parse_json(self, response: Any) -> Any:
        return cast(httpx.Response, response).json()

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        self.last_status = None
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            err = RequestNetworkException()
            err.add_note(str(exc))
            raise err from exc
        self.last_status = response.status_code
        return response


class ScimSender:
    """The Sender for ``kind: scim`` subscriptions."""

    def __init__(
        self,
        settings: NotifierSettings,
        projections: Projections,
        ids: ScimIds,
        clock: Clock,
        fresh: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.concurrency = settings.scim_concurrency
        self.fresh = fresh
        self._connecting = asyncio.Lock()  # one client (and discovery) for concurrent attempts
        self._retired: list[httpx.AsyncClient] = []  # replaced, closed once their requests are done
        self._closing: set[asyncio.Task[None]] = set()
        self.p = projections
        self.ids = ids
        self.clock = clock
        self._http: httpx.AsyncClient | None = None
        self._scim: HttpxSCIMClient | None = None
        self._key: tuple[str, str | None] | None = None

    async def close(self) -> None:
        for task in self._closing:
            task.cancel()
        retired, self._retired = self._retired, []
        for http in [*retired, *([self._http] if self._http is not None else [])]:
            await http.aclose()
        self._http = self._scim = None

    def _retire(self) -> None:
        """Set the client aside, closed only after every request on it has had its timeout.

        Attempts run in parallel on one client: closing it at once when one of them needed a new
        connection failed the others ("the client has been closed"), and each became a retry."""
        if self._http is not None:
            http = self._http
            self._retired.append(http)
            delay = self.settings.delivery_timeout_seconds + 1

            async def close_later() -> None:
                await asyncio.sleep(delay)
                if http in self._retired:
                    self._retired.remove(http)
                    await http.aclose()

            task = asyncio.create_task(close_later())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        self._http = self._scim = None

    def key_of(self, p: Pending) -> str:
        """One person's deliveries one at a time: their User is built from several aggregates."""
        event = p.event
        aggregate = str(event["type"]).split(".", 1)[0]
        data = event.get("data") or {}
        if aggregate in ("person", "access"):
            return f"person:{event['subject']}"
        if aggregate in ("engagement", "account") and data.get("person"):
            return f"person:{data['person']}"
        return p.stream

    async def _client(self, sub: Doc) -> HttpxSCIMClient:
        async with self._connecting:
            return await self._connect(sub)

    async def _connect(self, sub: Doc) -> HttpxSCIMClient:
        key = (str(sub["url"]), sub.get("token"))
        if self._scim is None or self._key != key:
            self._retire()
            headers = {"Authorization": f"Bearer {sub['token']}"} if sub.get("token") else {}
            base = str(sub["url"]).rstrip("/") + "/"
            self._http = httpx.AsyncClient(
                base_url=base, headers=headers, timeout=self.settings.delivery_timeout_seconds
            )
            scim = HttpxSCIMClient(self._http)
            await scim.discover()
            self._scim, self._key = scim, key
        return self._scim

    async def send(self, sub: Doc, p: Pending) -> domain.Outcome:
        scim: HttpxSCIMClient | None = None
        try:
            await self._fresh()
            scim = await self._client(sub)
            await self._apply(scim, sub, p.event)
            return domain.Outcome("ok", 200)
        except RequestNetworkException as exc:
            self._scim = None  # rediscover after an outage
            return domain.Outcome(
                "retry", None, f"connection: {exc} {getattr(exc, '__notes__', '')}"[:500]
            )
        except SCIMException as exc:
            out = domain.classify(int(exc.status or 500))
            return domain.Outcome(out.kind, out.status, f"SCIM {exc.status}: {exc}"[:500])
        except UnexpectedStatusCodeException as exc:
            status = (scim.last_status if scim else None) or 500
            out = domain.classify(status)
            return domain.Outcome(out.kind, status, str(exc)[:500])
        except StillChanging as exc:
            return domain.Outcome("retry", None, str(exc))
        except SCIMClientException as exc:
            self._scim = None
            status = (scim.last_status if scim else None) or 500
            out = domain.classify(status if status >= 400 else 500)
            return domain.Outcome(out.kind, status, f"{type(exc).__name__}: {exc}"[:500])

    # --- what an event means at the target -------------------------------------------------

    async def _apply(self, scim: HttpxSCIMClient, sub: Doc, event: dict[str, Any]) -> None:
        etype: str = event["type"]
        aggregate = etype.split(".", 1)[0]
        data: dict[str, Any] = event["data"]
        it_system = sub.get("it_system")
        if aggregate == "account":
            if it_system and data.get("it_system") != it_system:
                return
            person = str(data["person"])
            account = self.account_for(person, it_system)
            if account is None or account["status"] == "deleted":
                await self._delete_user(scim, sub, person)
                for role in self.roles_of(person, it_system):
                    await self._sync_group(scim, sub, role)
            else:
                await self._upsert_user(scim, sub, person, account)
                for role in self.roles_of(person, it_system):
                    await self._join_group(scim, sub, role, person)
        elif aggregate == "access":
            if "role" not in data:  # access.current: the whole set, no one right changed
                for right in data.get("rights", []):
                    if not it_system or right.get("it_system") == it_system:
                        await self._sync_group(scim, sub, str(right["role"]))
                return
            if it_system and data.get("it_system") != it_system:
                return
            if etype == "access.granted":
                await self._join_group(scim, sub, str(data["role"]), person=event["subject"])
            else:
                await self._sync_group(scim, sub, str(data["role"]))
        elif aggregate in ("person", "engagement"):
            person = event["subject"] if aggregate == "person" else str(data.get("person"))
            account = self.account_for(person, it_system)
            if account is not None and account["status"] != "deleted":
                await self._upsert_user(scim, sub, person, account)
        elif aggregate == "manager":
            unit = data.get("unit")
            for person in self.members_of(str(unit)):
                await self._refresh_user(scim, sub, person)
        elif aggregate == "role":
            if await self.ids.get(sub["_id"], "group", event["subject"]):
                await self._sync_group(scim, sub, event["subject"])

    async def _fresh(self) -> None:
        if self.fresh is not None:
            await self.fresh()

    async def _refresh_user(self, scim: HttpxSCIMClient, sub: Doc, person: str) -> None:
        """Re-send a provisioned user (its manager or department changed).

        This runs under another person's key, beside that person's own deliveries, so it is
        checked after it lands: a User built before the person's latest change is sent again."""
        for _ in range(SYNC_ROUNDS):
            account = self.account_for(person, sub.get("it_system"))
            if account is None or account["status"] == "deleted":
                return
            if not await self.ids.get(sub["_id"], "user", person):
                return
            sent = await self._build(sub, person, account)
            await self._put_user(scim, sub, person, account, sent)
            await self._fresh()
            account = self.account_for(person, sub.get("it_system"))
            if account is None or account["status"] == "deleted":
                return  # the account's own delivery deletes the User
            if _same_user(await self._build(sub, person, account), sent):
                return
        raise StillChanging(f"the User of {person} changed during each of {SYNC_ROUNDS} sends")

    def members_of(self, unit: str) -> list[str]:
        """Persons whose primary engagement is in ``unit`` today."""
        out = []
        for person in self.p.engagements_of:
            eng = self.primary_engagement(person)
            if eng and eng.get("unit") == unit:
                out.append(person)
        return out

    def managed_units(self, person: str) -> set[str]:
        today = self.today()
        units = set()
        for doc in self.p["manager"].items.values():
            s = domain.slice_at(doc["data"]["timeline"], today)
            if s and s.get("person") == person and s.get("unit"):
                units.add(str(s["unit"]))
        return units

    def today(self) -> date:
        return self.clock.today()

    def account_for(self, person: str, it_system: str | None) -> dict[str, Any] | None:
        """The person's account in the target's IT system (the newest one when several)."""
        best: dict[str, Any] | None = None
        for aid in self.p.accounts_of.get(person, ()):
            doc = self.p["account"].get(aid)
            if doc is None:
                continue
            acc = doc["data"]
            if it_system and acc.get("it_system") != it_system:
                continue
            if best is None or (best["status"] == "deleted" and acc["status"] != "deleted"):
                best = acc
        return best

    def roles_of(self, person: str, it_system: str | None) -> set[str]:
        doc = self.p["access"].get(person)
        if doc is None:
            return set()
        return {
            r["role"]
            for r in doc["data"].get("rights", [])
            if not it_system or r.get("it_system") == it_system
        }

    def holders(self, role: str) -> list[str]:
        iso = self.today().isoformat()
        return sorted(person for person, doc in self.p["access"].items.items() if _holds(doc, role, iso))

    def holds(self, person: str, role: str) -> bool:
        """One person's answer to ``holders``, without walking everyone's rights."""
        doc = self.p["access"].get(person)
        return doc is not None and _holds(doc, role, self.today().isoformat())

    def build_user(
        self,
        person: str,
        account: dict[str, Any],
        manager_id: str | None,
        ceiling: visibility.Level = visibility.DEFAULT,
    ) -> ScimUser:
        """The SCIM User; e-mails and phone numbers only those the target's ``ceiling`` allows."""
        today = self.today()
        pdoc = self.p["person"].get(person)
        pslice = domain.slice_at(pdoc["data"]["timeline"], today) if pdoc else None
        user = ScimUser(
            user_name=account["username"],
            external_id=person,
            active=account["status"] in ("requested", "active"),
        )
        if pslice:
            given, family = pslice.get("given_name"), pslice.get("surname")
            user.name = Name(given_name=given, family_name=family, formatted=f"{given} {family}")
            user.display_name = f"{given} {family}"
            shown = visibility.visible(
                pslice.get("addresses", []), ceiling, self.p.visibility_user_key
            )
            emails = [a["value"] for a in shown if a.get("scope") == "email"]
            if emails:
                user.emails = [
                    Email(value=e, type="work", primary=i == 0) for i, e in enumerate(emails)
                ]
            phones = [a["value"] for a in shown if a.get("scope") == "phone"]
            if phones:
                user.phone_numbers = [
                    PhoneNumber(value=n, type="work", primary=i == 0) for i, n in enumerate(phones)
                ]
        eng = self.primary_engagement(person)
        ext = EnterpriseUser()
        if eng:
            ext.employee_number = eng.get("user_key") or (pslice or {}).get("user_key")
            unit = self.p["orgunit"].get(str(eng.get("unit")))
            uslice = domain.slice_at(unit["data"]["timeline"], today) if unit else None
            if uslice:
                ext.department = uslice.get("name")
        if manager_id:
            ext.manager = Manager(value=manager_id)
        user[EnterpriseUser] = ext
        return user

    def primary_engagement(self, person: str) -> dict[str, Any] | None:
        today = self.today()
        found: list[dict[str, Any]] = []
        for eid in self.p.engagements_of.get(person, ()):
            doc = self.p["engagement"].get(eid)
            s = domain.slice_at(doc["data"]["timeline"], today) if doc else None
            if s:
                found.append(s)
        found.sort(key=lambda s: (not s.get("primary"), s.get("validity", {}).get("from", "")))
        return found[0] if found else None

    def manager_of(self, person: str) -> str | None:
        """The person managing the unit of ``person``'s primary engagement (not themself)."""
        eng = self.primary_engagement(person)
        if not eng:
            return None
        today = self.today()
        for doc in self.p["manager"].items.values():
            s = domain.slice_at(doc["data"]["timeline"], today)
            if s and s.get("unit") == eng.get("unit") and s.get("person") and s["person"] != person:
                return str(s["person"])
        return None

    async def _find(self, scim: HttpxSCIMClient, model: Any, external_id: str) -> str | None:
        found = await scim.query(
            model, query_parameters=SearchRequest(filter=f'externalId eq "{external_id}"')
        )
        if isinstance(found, ListResponse) and found.resources:
            return str(found.resources[0].id)
        return None

    async def _upsert_user(
        self,
        scim: HttpxSCIMClient,
        sub: Doc,
        person: str,
        account: dict[str, Any],
        follow: bool = True,
    ) -> None:
        """Create or replace the User; then (``follow``) refresh the people it manages.

        Only a created User changes what its reports say (their manager's id): a replaced one keeps
        its id, and re-sending every report on each of a manager's events multiplied the requests.
        A manager and a report created at once each store their id, then look for the other's: the
        manager's follow-up skips a report whose id is not stored yet, so the report, once stored,
        is built again and re-sent when its manager's id has appeared meanwhile."""
        sent = await self._build(sub, person, account)
        created = await self._put_user(scim, sub, person, account, sent)
        # Checked after it lands: another replica may have sent a newer state (a disablement,
        # say) that this User just overwrote; it stored that state before sending it, so the
        # catch-up after landing sees it. A created User's manager may have been created meanwhile.
        await self._fresh()
        await self.p.reread_accounts(person)
        now = self.account_for(person, sub.get("it_system")) or account
        if not _same_user(await self._build(sub, person, now), sent):
            await self._refresh_user(scim, sub, person)
        if follow and created:
            for unit in self.managed_units(person):
                for report in self.members_of(unit):
                    if report != person:
                        await self._refresh_user(scim, sub, report)

    async def _build(self, sub: Doc, person: str, account: dict[str, Any]) -> ScimUser:
        manager = self.manager_of(person)
        manager_id = await self.ids.get(sub["_id"], "user", manager) if manager else None
        return self.build_user(person, account, manager_id, domain.ceiling_of(sub))

    async def _put_user(
        self, scim: HttpxSCIMClient, sub: Doc, person: str, account: dict[str, Any], user: ScimUser
    ) -> bool:
        """True when the User was created (it has a new id), or found by its externalId.

        A person without a stored id is created at once, not searched for first: a filter
        search is a scan of every user at many peers (scim2-server), and searching before each
        of 2,000 new users kept the chaos run's peer minutes behind. A User that exists all the
        same (created before its id was stored, or before orgdir) answers the create with 409
        (``userName`` is unique, RFC 7643 §4.1.1); only then is it searched for and replaced."""
        sid = await self.ids.get(sub["_id"], "user", person)
        if sid and await self._replace_user(scim, sub, person, user, sid):
            return False
        try:
            created = await scim.create(user)
        except SCIMException as exc:
            if exc.status != 409:
                raise
            sid = await self._find(scim, ScimUser, person)
            if sid is None or not await self._replace_user(scim, sub, person, user, sid):
                raise  # the userName is another person's: a conflict for an operator to see
            return True
        await self.ids.set(sub["_id"], "user", person, str(getattr(created, "id", "")))
        return True

    async def _replace_user(
        self, scim: HttpxSCIMClient, sub: Doc, person: str, user: ScimUser, sid: str
    ) -> bool:
        """Replace the User ``sid``; False when the peer no longer has it."""
        user.id = sid
        try:
            await scim.replace(user)
        except SCIMException as exc:
            if exc.status != 404:
                raise
            user.id = None
            return False
        await self.ids.set(sub["_id"], "user", person, sid)
        return True

    async def _delete_user(self, scim: HttpxSCIMClient, sub: Doc, person: str) -> None:
        sid = await self.ids.get(sub["_id"], "user", person) or await self._find(
            scim, ScimUser, person
        )
        if sid:
            try:
                await scim.delete(ScimUser, sid)
            except SCIMException as exc:
                if exc.status != 404:
                    raise
        await self.ids.drop(sub["_id"], "user", person)

    async def _join_group(self, scim: HttpxSCIMClient, sub: Doc, role: str, person: str) -> None:
        """Add one member with a PATCH when the person holds the role today and has a provisioned
        user; create the Group with its holders when the peer has none yet.

        Replacing the Group on every grant sent the whole membership each time: a role everyone
        holds cost O(holders) per grant, and the first 2,000 accounts of the chaos run took over
        five minutes to reach the SCIM peer. A grant to someone without a user yet changes no
        Group (they join when their account is provisioned). Revocations still replace the Group
        (RFC 7644's filtered remove is not served by every peer); a replace also repairs any drift.
        """
        account = self.account_for(person, sub.get("it_system"))
        if not (self.holds(person, role) and account and account["status"] != "deleted"):
            return
        uid = await self.ids.get(sub["_id"], "user", person)
        if uid is None:
            return
        gid = await self.ids.get(sub["_id"], "group", role)
        if gid is None:
            await self._sync_group(scim, sub, role)
            return
        patch = PatchOp[Group](
            operations=[PatchOperation(op=PatchOperation.Op.add, path="members", value=[{"value": uid}])]
        )
        try:
            await scim.modify(Group, gid, patch)
        except SCIMException as exc:
            if exc.status != 404:
                raise
            await self.ids.drop(sub["_id"], "group", role)  # gone at the peer: create it again
            await self._sync_group(scim, sub, role)
            return
        await self._fresh()
        account = self.account_for(person, sub.get("it_system"))
        if not (self.holds(person, role) and account and account["status"] != "deleted"):
            await self._sync_group(scim, sub, role)  # revoked while the PATCH was on its way

    async def _sync_group(self, scim: HttpxSCIMClient, sub: Doc, role: str) -> None:
        """Replace the role's Group with the holders that have a provisioned user, until what was
        sent is still the membership after it landed (a concurrent grant's PATCH or user may have
        come in between; after SYNC_ROUNDS the delivery is tried again later)."""
        for _ in range(SYNC_ROUNDS):
            members = await self._members(sub, role)
            if not await self._replace_group(scim, sub, role, members):
                return
            await self._fresh()
            if await self._members(sub, role) == members:
                return
        raise StillChanging(f"the Group of {role} changed during each of {SYNC_ROUNDS} replaces")

    async def _members(self, sub: Doc, role: str) -> list[str]:
        provisioned = [
            person
            for person in self.holders(role)
            if (account := self.account_for(person, sub.get("it_system"))) is not None
            and account["status"] != "deleted"
        ]
        uids = await self.ids.get_many(sub["_id"], "user", provisioned)  # one query, not one per member
        return [uids[person] for person in provisioned if person in uids]

    async def _replace_group(self, scim: HttpxSCIMClient, sub: Doc, role: str, members: list[str]) -> bool:
        """Send the Group with ``members``; False when nothing was sent (no Group and no members)."""
        rdoc = self.p["role"].get(role)
        rslice = domain.slice_at(rdoc["data"]["timeline"], self.today()) if rdoc else None
        group = Group(
            display_name=(rslice or {}).get("name") or role,
            external_id=role,
            members=[GroupMember(value=m) for m in members],
        )
        gid = await self.ids.get(sub["_id"], "group", role) or await self._find(scim, Group, role)
        if gid:
            group.id = gid
            try:
                await scim.replace(group)
                await self.ids.set(sub["_id"], "group", role, gid)
                return True
            except SCIMException as exc:
                if exc.status != 404:
                    raise
                group.id = None
        if not members:
            return False  # nothing to hold yet: no empty groups for roles without provisioned holders
        gid = await self._create_once(scim, sub, role, group)
        if gid is not None:  # another sender created it meanwhile: ours goes there
            group.id = gid
            await scim.replace(group)
        return True

    async def _create_once(self, scim: HttpxSCIMClient, sub: Doc, role: str, group: Group) -> str | None:
        """Create the role's Group unless another sender (this replica or another) is creating it;
        then wait for its id and return it (None: this one created it).

        Two first members of a role joining at once each found no Group and created one, and the
        peer held two Groups of that name (a lost member in the replicas test)."""
        owner = f"{uuid.uuid4()}"
        deadline = asyncio.get_running_loop().time() + CREATE_WAIT_SECONDS
        while not await self.ids.claim_creation(sub["_id"], "group", role, owner, CREATE_WAIT_SECONDS):
            if asyncio.get_running_loop().time() > deadline:
                raise StillChanging(f"the Group of {role} is being created by another sender")
            await asyncio.sleep(0.1)
            gid = await self.ids.get(sub["_id"], "group", role)
            if gid:
                return gid
        try:
            gid = await self.ids.get(sub["_id"], "group", role)  # created just before our claim
            if gid:
                return gid
            created = await scim.create(group)
            await self.ids.set(sub["_id"], "group", role, str(getattr(created, "id", "")))
            return None
        finally:
            await self.ids.release_creation(sub["_id"], "group", role, owner)


def _same_user(a: ScimUser, b: ScimUser) -> bool:
    """The same content, whatever the peer's id (set on one of them when sent)."""
    return bool(a.model_dump(exclude={"id"}) == b.model_dump(exclude={"id"}))


def _holds(doc: Doc, role: str, iso: str) -> bool:
    """The projected rights hold ``role`` on the day ``iso``."""
    for r in doc["data"].get("rights", []):
        v = r.get("validity", {})
        if r.get("role") == role and v.get("from", "") <= iso and (v.get("to") is None or iso < v["to"]):
            return True
    return False
