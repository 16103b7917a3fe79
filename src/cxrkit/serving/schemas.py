"""Pydantic shapes of the JSON API: they document it in the OpenAPI schema (``/docs``) and check what it returns."""
from __future__ import annotations

from pydantic import BaseModel, Field


class FileError(BaseModel):
    file: str | None = Field(description="the upload the error is about (its file name), if any")
    reason: str


class ErrorBody(BaseModel):
    detail: str = Field(description="one line for a person")
    errors: list[FileError] = []


class Result(BaseModel):
    file: str
    label: str = Field(description="the model's decision (binary: P(positive) ≥ the model's threshold)")
    probabilities: dict[str, float]
    uncertain: bool = Field(description="the model abstains: its confidence is below its calibrated threshold")
    width: int
    height: int
    preview: str | None = Field(None, description="with preview=true: the decoded film, JPEG data URI, ≤ 512 px")
    heatmap: str | None = Field(None, description="with heatmap=true: Grad-CAM overlay, JPEG data URI, ≤ 512 px")
    heatmap_note: str | None = Field(None, description="why there is no heatmap (exported ONNX models)")


class PredictResponse(BaseModel):
    model: str
    results: list[Result]


class ModelCard(BaseModel):
    id: str
    arch: str
    classes: list[str]
    positive_class: str | None
    threshold: float | None
    threshold_rule: str | None
    input: str
    format: str
    heatmap: bool
    heatmap_note: str | None
    recipe: str | None
    validation_metrics: dict | None
    intended_use: str
    disclaimer: str
    card_markdown: str | None


class ModelsResponse(BaseModel):
    default: str
    models: list[ModelCard]
    max_upload_mb: float = Field(description="request size limit (413 above it)")
    max_files: int = Field(description="files per request")


class Health(BaseModel):
    status: str
    models: list[str]
