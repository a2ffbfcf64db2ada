"""A fake OpenAI-compatible API (a cloud endpoint): the model listing and nothing to load."""

from __future__ import annotations

import httpx

# GET /v1/models as the OpenAI API documents it.
MODELS = {
    "object": "list",
    "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
        {"id": "gpt-4.1", "object": "model", "created": 1744316542, "owned_by": "system"},
        {"id": "text-embedding-3-small", "object": "model", "created": 1705948997, "owned_by": "system"},
    ],
}


def listing(request: httpx.Request) -> httpx.Response:
    if request.url.path != "/v1/models":
        return httpx.Response(404, json={"error": {"message": "Unknown path", "type": "invalid_request_error"}})
    return httpx.Response(200, json=MODELS)
