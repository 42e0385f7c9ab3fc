"""Results -> JSON (orjson) or human text. The only code that writes to stdout."""
