"""The admin UI under ``/ui/`` (docs/adr/0026-admin-ui.md): routes, session, views."""
