"""The OpenAI Responses protocol: request bodies -> ``GenerationRequest`` values, chunks -> the
``response`` object and its typed stream events, and a small store of responses for
``previous_response_id``. Nothing here decodes or touches the model; ``endpoints`` wires the routes."""
