"""POST /v1/embeddings in OpenAI's shape, served by the index's own embedding model."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ..auth import CurrentUser
from ..errors import APIError
from ..models import RAG_MODEL
from ..state import State

router = APIRouter(prefix="/v1")
MAX_INPUTS = 2048  # OpenAI's limit per request


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    input: str | list[str] | list[int] | list[list[int]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


def _texts(body: EmbeddingsRequest) -> list[str]:
    raw = body.input
    if isinstance(raw, str):
        raw = [raw]
    if not raw or not all(isinstance(t, str) for t in raw):
        raise APIError(
            400,
            "input must be a non-empty string or a list of strings (token arrays are not"
            " supported).",
            param="input",
        )
    texts = [t for t in raw if isinstance(t, str)]
    if len(texts) > MAX_INPUTS:
        raise APIError(400, f"input may hold at most {MAX_INPUTS} strings.", param="input")
    if any(not t.strip() for t in texts):
        raise APIError(400, "input must not contain empty strings.", param="input")
    return texts


@router.post("/embeddings")
async def embeddings(body: EmbeddingsRequest, state: State, user: CurrentUser) -> dict[str, Any]:
    emb = state.embedder
    if body.model not in (emb.name, RAG_MODEL):
        raise APIError(
            404,
            f"The model '{body.model}' does not exist; embeddings come from '{emb.name}'"
            f" (or use '{RAG_MODEL}').",
            param="model",
            code="model_not_found",
        )
    if body.dimensions is not None and body.dimensions != emb.dim:
        raise APIError(400, f"dimensions must be {emb.dim} for this model.", param="dimensions")
    texts = _texts(body)
    counts = await asyncio.to_thread(lambda: [emb.count_tokens(t) for t in texts])
    limit = getattr(emb, "max_tokens", None)
    if limit and max(counts) > limit:
        worst = counts.index(max(counts))
        raise APIError(
            400,
            f"This model's maximum context length is {limit} tokens; input[{worst}] has"
            f" {counts[worst]}.",
            param="input",
            code="context_length_exceeded",
        )
    vectors = await asyncio.to_thread(emb.embed, texts)
    data = []
    for i, vec in enumerate(np.asarray(vectors, dtype=np.float32)):
        value: Any = (
            base64.b64encode(vec.astype("<f4").tobytes()).decode()
            if body.encoding_format == "base64"
            else vec.tolist()
        )
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(counts)
    return {
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
