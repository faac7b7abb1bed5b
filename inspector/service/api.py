"""The HTTP API (FastAPI; its OpenAPI spec is at /openapi.json, behind the bearer token like everything
but /health; the interactive /docs and /redoc pages are not served: they would fetch the schema without
a token, and they are an open door on a factory network. Load the schema into a tool of your own).

- ``GET /health``: liveness, readiness, camera state, sinks. No authentication (for probes).
- ``GET /metrics``: Prometheus text format.
- ``GET /results``: records, newest first, paged, filtered by time range and verdict.
- ``GET /stats``: yield per hour and defects per type over a time range.
- ``GET /frames/latest.jpg``: the last inspected frame with its defects drawn.
- ``GET /audit``: the audit trail (admins; ``format=csv`` exports it).
- ``/review``: the verification queue (with ``review: true``; ``service/review_api.py``): operators list and
  decide boards, engineers export the decided ones as training data.

Everything but /health needs ``Authorization: Bearer <token>`` of a configured user; reads need the
operator role, changes engineer, /audit admin (``auth.required_role``); every change is audited. No
endpoint takes a file name or path: what is served comes from the records store and memory only.
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Optional

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from inspector.redaction import redact
from inspector.service.auth import LEGACY_TOKEN_USER, Authenticator, User, hash_token, required_role
from inspector.service.records import StoreUnavailable, iso

DAY_S = 24 * 3600.0
_MAX_OFFSET = 1_000_000_000
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _iso_only(value: Any) -> Any:
    # pydantic would read a bare number as seconds since 1970; the spec promises ISO 8601 only.
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError("expected an ISO 8601 date-time such as 2026-01-31T08:00:00Z, not a number")
    return value


def _representable(value: datetime) -> datetime:
    # 0001-01-01T00:00:00+01:00 is a valid ISO 8601 time whose UTC form is in year 0: refuse it here (422)
    # rather than fail converting it (500).
    try:
        (value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except (OverflowError, ValueError, OSError):
        raise ValueError("date-time out of range: in UTC it must fall within years 1-9999") from None
    return value


Moment = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(_representable)]


class Camera(BaseModel):
    state: str = Field(description="connecting | connected | reconnecting | stalled (reads keep failing) | ended | "
                       "closed")
    kind: str
    source: str
    reconnects: int
    last_error: Optional[str]


class QueueState(BaseModel):
    depth: int
    capacity: int


class SinkOut(BaseModel):
    name: str
    up: Optional[bool]
    backlog: int = Field(description="entries waiting in the local spool for this sink")
    last_error: str


class ModelOut(BaseModel):
    name: str
    package_id: str
    engine: str
    precision: str


class AlarmOut(BaseModel):
    kind: str
    level: str
    message: str
    line: str
    raised_at: str
    detail: dict[str, Any]
    seq: Optional[int]


class EvidenceOut(BaseModel):
    directory: str
    ok: bool = Field(description="false while NG evidence images cannot be written (health is degraded)")
    last_error: Optional[str]
    files: int


class Health(BaseModel):
    status: str = Field(description="ok | degraded | starting | stopping | stopped")
    live: bool
    ready: bool = Field(description="the source delivers frames and the inference worker runs")
    line: str
    camera: Camera
    queue: QueueState
    sinks: list[SinkOut]
    model: ModelOut
    recent_alarms: list[AlarmOut]
    evidence: Optional[EvidenceOut] = Field(None, description="null when no evidence directory is configured")
    uptime_s: float


class Defect(BaseModel):
    class_name: str
    class_id: int
    score: float
    box: list[float] = Field(description="x1, y1, x2, y2 in frame pixels")


class RecordOut(BaseModel):
    record_id: str
    seq: Optional[int]
    line: str
    source: str
    frame_id: str
    frame_file: Optional[str]
    file_version: Optional[str]
    captured_at: str = Field(description="ISO 8601, UTC")
    verdict: Literal["OK", "NG", "ERROR"]
    defects: list[Defect]
    model_name: str
    package_id: str
    latency_ms: float
    inference_ms: Optional[float]
    evidence: Optional[str] = Field(description="file name of the evidence JPEG in the evidence directory")
    error: Optional[str]
    part_id: Optional[str] = Field(None, description="the board's serial from the PLC (trigger mode)")
    recipe: Optional[str] = Field(None, description="the recipe active when the board was judged")
    recipe_version: Optional[str] = None


class ResultsPage(BaseModel):
    total: int = Field(description="records matching the filter")
    limit: int
    offset: int
    items: list[RecordOut]


class HourOut(BaseModel):
    hour: str = Field(description="start of the hour, ISO 8601 UTC")
    total: int
    ok: int
    ng: int
    error: int
    yield_: Optional[float] = Field(alias="yield", description="OK / (OK + NG); null when nothing was judged")


class StatsOut(BaseModel):
    line: str
    since: str
    until: str
    total: int
    ok: int
    ng: int
    error: int
    yield_: Optional[float] = Field(alias="yield")
    hours: list[HourOut]
    defects_per_class: dict[str, int]


class Problem(BaseModel):
    detail: str


# Query models forbid unknown parameters: a misspelt filter (?verdikt=NG) is an error, not "all records".
class ResultsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: Optional[Moment] = Field(None, description="from this time (inclusive; ISO 8601, UTC if no zone)")
    until: Optional[Moment] = Field(None, description="up to this time (exclusive)")
    verdict: Optional[Literal["OK", "NG", "ERROR"]] = None
    part_id: Optional[str] = Field(None, min_length=1, max_length=64, description="one board's records (its serial)")
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=_MAX_OFFSET)


class StatsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: Optional[Moment] = Field(None, description="default: 24 hours before until")
    until: Optional[Moment] = Field(None, description="default: now")


class RecipeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="the recipe's name (its file name without .yaml)")


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=_MAX_OFFSET)
    format: Literal["json", "csv"] = "json"


class AuditEntryOut(BaseModel):
    seq: int
    at: str = Field(description="ISO 8601, UTC")
    who: str
    role: Optional[str]
    action: str
    target: str
    old: Optional[str]
    new: Optional[str]
    outcome: Optional[str] = Field(description="HTTP status of the change, or null")


class AuditPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[AuditEntryOut]


_UNAUTHORIZED = {401: {"model": Problem, "description": "missing or wrong bearer token"},
                 403: {"model": Problem, "description": "this user's role may not make this request"}}
_STORE_DOWN = {503: {"model": Problem, "description": "the record store (PostgreSQL) is unreachable right now; "
                     "records wait in the local spool"}}


def create_app(service, token: Optional[str] = None, users: Optional[list[User]] = None) -> FastAPI:
    """The API of ``service``. ``users`` (roles, hashed tokens) and/or ``token`` (an admin) may call it; the
    role each request needs comes from ``auth.required_role``. Changes are recorded in ``service.audit``."""
    app = FastAPI(title="PCB inspector line service", version="1", openapi_url=None, docs_url=None, redoc_url=None,
                  description="Results, health and metrics of one production line's inspection service.")
    bearer = HTTPBearer(auto_error=False, description="a user's token (roles: operator, engineer, admin)")
    everyone = list(users or []) + ([User(LEGACY_TOKEN_USER, "admin", hash_token(token))] if token else [])
    authenticator = Authenticator(everyone)
    audit = getattr(service, "audit", None)

    def authorized(request: Request, credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        """Every endpoint but /health: a known token, and a role that may make this request."""
        user = None
        if credentials is not None and credentials.scheme.lower() == "bearer":
            user = authenticator.identify(credentials.credentials)
        if user is None:
            raise HTTPException(status_code=401, detail="a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        request.state.user = user
        needed = required_role(request.method, request.url.path)
        if not user.may(needed):
            raise HTTPException(status_code=403, detail=f"{request.method} {request.url.path} needs the {needed} "
                                f"role; {user.name} is {user.role}")

    app.state.authorized = authorized  # for endpoints added to the app elsewhere: Depends(app.state.authorized)

    @app.middleware("http")
    async def one_value_per_query_parameter(request: Request, call_next):
        """Every query parameter of this API takes one value. FastAPI would silently keep the last of a repeated
        one (?part_id=A&part_id=B as B): ambiguous, so refused like any other invalid parameter."""
        names = [name for name, _ in request.query_params.multi_items()]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:  # shaped as FastAPI's own 422 (HTTPValidationError), which the spec documents
            return JSONResponse(status_code=422, content={"detail": [
                {"type": "repeated", "loc": ["query", name],
                 "msg": f"query parameter {name!r} given {names.count(name)} times; it takes one value"}
                for name in repeated]})
        return await call_next(request)

    @app.middleware("http")
    async def audit_changes(request: Request, call_next):
        """Every request that may change something is recorded: who, what, the new value, the outcome."""
        if request.method in ("GET", "HEAD", "OPTIONS") or audit is None:
            return await call_next(request)
        body = await request.body()
        response = await call_next(request)
        user = getattr(request.state, "user", None)
        if getattr(request.state, "audited", False):
            return response  # the endpoint recorded the change itself, with more than the body says
        if user is not None:  # unauthenticated attempts are answered 401/403 and logged by uvicorn only
            state = request.state
            audit.record(user.name, f"{request.method} {request.url.path}", getattr(state, "audit_target",
                         request.url.path), getattr(state, "audit_old", None), getattr(state, "audit_new", body or None),
                         role=user.role, outcome=str(response.status_code))
        return response

    @app.get("/audit", response_model=AuditPage, tags=["administration"], dependencies=[Depends(authorized)],
             responses={**_UNAUTHORIZED, 403: {"model": Problem, "description": "admins only"},
                        200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description":
                              "the audit trail, newest first (format=csv: all of it, oldest first)"}})
    def audit_trail(query: Annotated[AuditQuery, Query()]):
        """Who changed what, when, from which value to which (admins only)."""
        if audit is None:
            return {"total": 0, "limit": query.limit, "offset": query.offset, "items": []}
        if query.format == "csv":
            return Response(content=audit.export_csv(), media_type="text/csv",
                            headers={"Content-Disposition": 'attachment; filename="audit.csv"'})
        total, entries = audit.entries(query.limit, query.offset)
        return {"total": total, "limit": query.limit, "offset": query.offset,
                "items": [entry.to_dict() for entry in entries]}

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(authorized)])
    def openapi() -> JSONResponse:
        """The OpenAPI schema, for those holding a token."""
        return JSONResponse(app.openapi())

    @app.get("/health", response_model=Health, tags=["operations"])
    def health() -> dict:
        """Liveness (answers at all), readiness (frames flow and are inspected), camera and sink states."""
        return service.health()

    @app.get("/metrics", tags=["operations"], dependencies=[Depends(authorized)], responses={
        **_UNAUTHORIZED, 200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                               "description": "Prometheus text exposition format"}})
    def metrics() -> Response:
        body, content_type = service.metrics.render()
        return Response(content=body, media_type=content_type)

    @app.get("/results", response_model=ResultsPage, tags=["results"], dependencies=[Depends(authorized)],
             responses={**_UNAUTHORIZED, **_STORE_DOWN})
    def results(query: Annotated[ResultsQuery, Query()]):
        """This line's records, newest first."""
        try:
            page = service.store.query(line=service.line, since=_epoch(query.since), until=_epoch(query.until),
                                       verdict=query.verdict, limit=query.limit, offset=query.offset,
                                       part_id=query.part_id)
        except StoreUnavailable as error:
            return JSONResponse(status_code=503, content={"detail": redact(str(error))})
        return {"total": page.total, "limit": query.limit, "offset": query.offset,
                "items": [r.to_dict() for r in page.items]}

    @app.get("/stats", response_model=StatsOut, response_model_by_alias=True, tags=["results"],
             dependencies=[Depends(authorized)], responses={**_UNAUTHORIZED, **_STORE_DOWN})
    def stats(query: Annotated[StatsQuery, Query()]):
        """Yield per hour (OK / judged) and defect counts per class over [since, until)."""
        end = _epoch(query.until) if query.until is not None else time.time()
        start = _epoch(query.since) if query.since is not None else max(end - DAY_S, 0.0)  # none predates 1970
        try:
            result = service.store.stats(line=service.line, since=start, until=end)
        except StoreUnavailable as error:
            return JSONResponse(status_code=503, content={"detail": redact(str(error))})
        ok, ng, error = (sum(getattr(h, name) for h in result.hours) for name in ("ok", "ng", "error"))
        return {"line": service.line, "since": iso(start), "until": iso(end), "total": ok + ng + error,
                "ok": ok, "ng": ng, "error": error, "yield": None if ok + ng == 0 else ok / (ok + ng),
                "hours": [{"hour": iso(h.hour), "total": h.total, "ok": h.ok, "ng": h.ng, "error": h.error,
                           "yield": h.yield_fraction} for h in result.hours],
                "defects_per_class": result.defects_per_class}

    @app.get("/frames/latest.jpg", tags=["results"], dependencies=[Depends(authorized)], responses={
        **_UNAUTHORIZED, 404: {"model": Problem, "description": "no frame inspected yet"},
        200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
              "description": "the last inspected frame, defects drawn"}})
    def latest_frame() -> Response:
        data = service.latest_jpeg()
        if data is None:
            return JSONResponse(status_code=404, content={"detail": "no frame inspected yet"})
        return Response(content=data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/recipe", tags=["recipes"], dependencies=[Depends(authorized)], responses={
        **_UNAUTHORIZED, 409: {"model": Problem, "description": "no recipes directory configured"}})
    def recipe_state():
        """The active recipe, the recipes on file, and why the last request was refused (if it was)."""
        manager = service.recipes
        if manager is None:
            return JSONResponse(status_code=409, content={"detail": "no recipes directory configured (recipes:)"})
        from inspector.service.recipes import RecipeError, list_recipes

        try:
            available = [path.stem for path in list_recipes(manager.directory)]
        except RecipeError as error:
            available, problem = [], str(error)
        else:
            problem = None
        active = manager.active
        return {"active": None if active is None else {"name": active.recipe.name, "version": active.recipe.version,
                                                        "package_id": active.recipe.package_id},
                "available": available, "last_refusal": manager.last_refusal, "problem": problem}

    @app.post("/recipe", tags=["recipes"], dependencies=[Depends(authorized)], responses={
        **_UNAUTHORIZED, 400: {"model": Problem, "description": "the body is not parseable JSON"},
        409: {"model": Problem, "description": "no recipes directory configured, or the recipe failed validation "
              "(the active one stays; detail says why)"}})
    def select_recipe(request: RecipeRequest, http: Request):
        """Switch to another recipe between parts (validated first; refused with the reason otherwise)."""
        if service.recipes is None:
            return JSONResponse(status_code=409, content={"detail": "no recipes directory configured (recipes:)"})
        user = http.state.user
        # The recipe manager records the request with the old and the new recipe and version (a pending
        # switch a second time when it is applied): the middleware's generic entry would only repeat it.
        http.state.audited = True
        accepted, reason = service.recipes.request(request.name, source="http", who=user.name, role=user.role)
        if not accepted:
            return JSONResponse(status_code=409, content={"detail": reason})
        return {"name": request.name, "status": reason}

    feed = getattr(service, "review", None)
    if feed is not None:  # review: true; the verification queue for a review station (service/review_api.py)
        from inspector.service.review_api import review_router

        export_dir = service.config.review_export or service.config.data_dir / "review-export"
        app.include_router(review_router(feed.queue, authorized, export_dir))
    return app


def _epoch(moment: Optional[datetime]) -> Optional[float]:
    """A datetime -> epoch seconds; one without a zone is taken as UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
