"""Semantic encoders that turn frames into the tokens a DiT is prompted with."""
