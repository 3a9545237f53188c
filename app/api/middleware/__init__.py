"""The ASGI middlewares around every request, outermost first: request context (ID, trace,
access log, security headers), CORS, request metrics, the API key, admission control
(``app.api.overload.admission``) and the body limit. ``app.main.create_app`` stacks them from
the routes' declarations (``app.api.route_needs``)."""
