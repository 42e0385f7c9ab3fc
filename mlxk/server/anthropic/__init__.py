"""The Anthropic Messages protocol: request bodies -> ``GenerationRequest`` values, chunks -> the
``message`` object and its stream of events. Nothing here decodes or touches the model;
``endpoints`` wires the routes."""
