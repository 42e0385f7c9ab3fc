"""One use case per module: values in, frozen results out. No printing here."""
