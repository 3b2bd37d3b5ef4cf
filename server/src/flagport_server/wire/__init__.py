"""Wire models: msgspec Structs, one module per API surface and version."""
