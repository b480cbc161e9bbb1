"""The fleet server: ingest (MQTT → database), domain services, and the HTTP API.

    from server.app import create_app
    from server.settings import load_settings

    app = create_app(load_settings(Path("server.toml")))

Guide: docs/server.md. API reference: docs/api.md.
"""
