"""The service's answers as pydantic models: what each endpoint returns, shown in OpenAPI."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str
    count: int
    generation: int


class OperatingPoint(BaseModel):
    far: float | None
    threshold: float


class GalleryInfo(BaseModel):
    count: int
    identities: int
    cameras: list[int]
    model_hash: str
    backend: str
    index: str | None
    dim: int
    default_far: float | None
    operating_points: list[OperatingPoint]
    writes: bool
    embedding: dict[str, str] = Field(description="what embedded the index: runtime, precision")
    queries_embedding: dict[str, str] = Field(description="what embeds the queries here")


class IdentityImage(BaseModel):
    row: int
    camid: int


class Identity(BaseModel):
    pid: int
    images: list[IdentityImage]
    cameras: list[int]


class Hit(BaseModel):
    rank: int
    score: float
    row: int
    pid: int
    camid: int
    match: bool | None = Field(description="score above the threshold (None: no threshold)")


class QueryResult(BaseModel):
    query: str
    camid: int
    hits: list[Hit]
    no_match: bool | None


class Threshold(BaseModel):
    value: float
    far: float | None = None
    source: str | None = None
    measured_far: float | None = None


class SearchAnswer(BaseModel):
    threshold: Threshold | None
    results: list[QueryResult]
    timing_ms: dict[str, float]
    generation: int


class RemoveRequest(BaseModel):
    pids: list[int] = Field(default_factory=list)
    rows: list[int] = Field(default_factory=list)


class Enrolled(BaseModel):
    added: int
    rows: list[int]
    count: int


class Removed(BaseModel):
    removed: int
    count: int
