"""The OpenAI-compatible server: a plain ASGI app (no framework), hosted by Granian."""
