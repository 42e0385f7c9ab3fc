"""One generation pipeline for ``mlxk run`` and ``mlxk serve``: request values -> prompt ->
sequence (sampler, detokenizer, segmenter, stops) -> chunks on their channels."""
