"""One module per model family's output format."""
