"""The HTTP layer: routes, request dependencies, schemas, auth, limits, upload parsing,
metrics and error handlers, over the inference core in ``app.core``."""
