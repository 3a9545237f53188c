"""The same model and image served by cellsign and by other model servers, under wrk.

``python -m benchmarks.peers --models DIR`` (see ``__main__``). Nothing here imports more
than the standard library at package level: the server modules under ``servers/`` run in
each peer's own venv and import this package from there.
"""
