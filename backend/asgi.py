"""The ASGI application for uvicorn/gunicorn: `uvicorn backend.asgi:app`."""

from backend.app import create_app

app = create_app()
