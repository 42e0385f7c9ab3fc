"""The sentence encoder for embeddings (generation lives in ``mlxk.generation``).

mlx is imported only when an encoder is loaded, never by cache commands.
"""
