"""The ``flags`` command-line interface."""

__all__: list[str] = []
