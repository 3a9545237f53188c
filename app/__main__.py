"""``python -m app``: serve with the settings from the environment (see app/server.py)."""

from app.server import main

main()
