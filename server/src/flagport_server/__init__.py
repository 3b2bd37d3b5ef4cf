"""Flagport's evaluation and admin server (Litestar + msgspec)."""

__all__: list[str] = []
