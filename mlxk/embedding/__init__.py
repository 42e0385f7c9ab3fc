"""Embedding models: sentence encoders of the BERT family (``bert``) and decoder-based embedders
(``decoder``) behind one loader (``loader``), sharing the vectors' shape and rules (``vectors``)."""
