"""Model ids and what they select: `hearth` (answers from every collection the caller may read),
`hearth:<collection>` (from that collection only) and the backend's own id (plain chat)."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import Settings

from .errors import APIError

RAG_MODEL = "hearth"
_PREFIX = RAG_MODEL + ":"


@dataclass(frozen=True)
class ModelChoice:
    rag: bool
    collection: str | None = None  # None: every collection the caller may read


def parse_model(model: str, settings: Settings, known: list[str]) -> ModelChoice:
    """What `model` asks for; 404 for an id that names nothing, or a collection the caller may
    not read (`known`), which is told apart from a missing one by nobody."""
    if model == RAG_MODEL:
        return ModelChoice(rag=True)
    if model == settings.llm_model:
        return ModelChoice(rag=False)
    if model.startswith(_PREFIX) and model[len(_PREFIX) :] in known:
        return ModelChoice(rag=True, collection=model[len(_PREFIX) :])
    raise APIError(
        404,
        f"The model '{model}' does not exist; GET /v1/models lists them.",
        param="model",
        code="model_not_found",
    )


def model_card(model_id: str, owned_by: str, created: int, **extra: object) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by, **extra}
