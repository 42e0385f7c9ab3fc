"""The OpenAI protocol: request bodies -> ``GenerationRequest`` values, chunks -> OpenAI's response
and stream shapes. Nothing here decodes or touches the model; ``endpoints`` wires the routes."""
