"""One engine that owns a loaded model: prompts, sampling, streaming text, stops, cancellation.

mlx and mlx-lm are imported only here (and only when a model is loaded), never by cache commands.
"""
