"""Everything that talks to the Hub: huggingface_hub is imported only here, and only when used."""
