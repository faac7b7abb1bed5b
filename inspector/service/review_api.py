"""The verification queue over HTTP, for a review station apart from the line.

    app.include_router(review_router(queue, app.state.authorized))

``GET /review`` (or ``/review/queue``) the pending boards, most instructive first (paged with ``limit`` and
``after``, the ``next_after`` of the page before); ``GET /review/items/{id}`` one board
with its decisions; ``GET /review/items/{id}/image`` and ``/template`` its pictures; ``GET
/review/items/{id}/crop?x=&y=&width=&height=&of=image|template`` a region of one as PNG (a whole panel's entries
name their ``tile``: the station shows that instead of a 16k-pixel panel); ``POST
/review/items/{id}/decision`` a verdict on every detection plus the defects missed (who decided is the
authenticated user; without authentication, the ``by`` field); ``POST /review/export`` writes the
reviewed boards as Pascal VOC into the configured folder. Bad requests get 400/404/422 with the field named.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from inspector.review_queue import ReviewError, ReviewQueue


class Verdict(BaseModel):
    index: int = Field(ge=0)
    verdict: str = Field(pattern="^(confirm|reject)$")
    class_name: Optional[str] = None
    box: Optional[list[float]] = Field(default=None, min_length=4, max_length=4)


class Added(BaseModel):
    box: list[float] = Field(min_length=4, max_length=4)
    class_name: str


class DecisionIn(BaseModel):
    verdicts: list[Verdict]
    added: list[Added] = []
    note: str = Field(default="", max_length=2000)
    by: Optional[str] = Field(default=None, max_length=100, description="who decided, when the API has no users")


def review_router(queue: ReviewQueue, authorized: Optional[Callable] = None,
                  export_dir: Optional[Path] = None) -> APIRouter:
    """The /review endpoints on ``queue``; ``authorized`` is the app's auth dependency (every endpoint)."""
    router = APIRouter(prefix="/review", tags=["review"],
                       dependencies=[Depends(authorized)] if authorized is not None else [])

    def item_or_404(item_id: int):
        try:
            return queue.get(item_id)
        except ReviewError as error:
            raise HTTPException(status_code=404, detail=str(error)) from error

    @router.get("")
    @router.get("/queue")
    def pending(limit: int = Query(30, ge=1, le=500), offset: int = Query(0, ge=0),
                after: Optional[int] = Query(None, description="id of the last board of the page before: the boards "
                                             "ranked after it (what next_after says), whatever was decided or "
                                             "queued since; an offset would skip or repeat a board then")) -> dict:
        try:
            items = queue.pending(limit, offset, after=after)
        except ReviewError as error:
            raise HTTPException(status_code=404, detail=str(error)) from error
        return {"items": [item.to_dict() for item in items], "counts": queue.counts(),
                "next_after": items[-1].id if items else after}

    @router.get("/items/{item_id}")
    def item(item_id: int) -> dict:
        found = item_or_404(item_id)
        return {**found.to_dict(), "decisions": [d.to_dict() for d in queue.decisions(item_id)]}

    @router.get("/items/{item_id}/image")
    def image(item_id: int) -> FileResponse:
        path = Path(item_or_404(item_id).image_path)
        if not path.is_file():
            raise HTTPException(status_code=404, detail=f"review item {item_id}: its image is no longer on disk")
        return FileResponse(path)

    @router.get("/items/{item_id}/template")
    def template(item_id: int) -> FileResponse:
        found = item_or_404(item_id)
        if not found.template_path or not Path(found.template_path).is_file():
            raise HTTPException(status_code=404, detail=f"review item {item_id}: no template on disk")
        return FileResponse(found.template_path)

    @router.get("/items/{item_id}/crop")
    def crop(item_id: int, x: int = Query(ge=0), y: int = Query(ge=0), width: int = Query(gt=0, le=8192),
             height: int = Query(gt=0, le=8192), of: str = Query("image", pattern="^(image|template)$")) -> Response:
        import cv2

        found = item_or_404(item_id)
        path = found.image_path if of == "image" else found.template_path
        picture = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path and Path(path).is_file() else None
        if picture is None:
            raise HTTPException(status_code=404, detail=f"review item {item_id}: its {of} is not on disk")
        rows, columns = picture.shape[:2]
        if x >= columns or y >= rows:
            raise HTTPException(status_code=400, detail=f"review item {item_id}: fields x, y: ({x}, {y}) lies outside "
                                                        f"the {of} ({columns}x{rows})")
        ok, encoded = cv2.imencode(".png", picture[y:y + height, x:x + width], [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise HTTPException(status_code=500, detail=f"review item {item_id}: the crop could not be encoded")
        return Response(encoded.tobytes(), media_type="image/png")

    @router.post("/items/{item_id}/decision")
    def decide(item_id: int, body: DecisionIn, request: Request) -> dict:
        item_or_404(item_id)
        user = getattr(request.state, "user", None)
        by = getattr(user, "name", None) or body.by
        if not by:
            raise HTTPException(status_code=422, detail="field by: who decided is required (no authenticated user)")
        try:
            decision = queue.decide(item_id, by, [v.model_dump(exclude_none=True) for v in body.verdicts],
                                    [a.model_dump() for a in body.added], body.note)
        except ReviewError as error:
            raise HTTPException(status_code=400, detail=str(error)) from error
        return decision.to_dict()

    @router.post("/export")
    def export() -> dict:
        if export_dir is None:
            raise HTTPException(status_code=404, detail="no export folder configured for this service")
        try:
            written = queue.export_voc(export_dir)
        except ReviewError as error:
            raise HTTPException(status_code=400, detail=str(error)) from error
        return {"folder": str(export_dir), "boards": len(written)}

    return router
