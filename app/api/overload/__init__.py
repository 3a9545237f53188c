"""Overload control: under more load than the service can serve, shed the excess with a fast
503 (``Retry-After``) and never run a model for a request nobody waits for (docs/overload.md).

An inference request (a route that declares ``admitted_as``, app/api/route_needs.py) meets it
in this order; one deadline (``app.core.deadline.Deadline``: ``REQUEST_TIMEOUT_S``, or less
with ``X-Request-Timeout``) covers all the waiting:

1. ``admission``: at most ``INFERENCE_CONCURRENCY`` requests in progress; the next ones wait
   unread for a slot until their deadline, newest first.
2. ``decode_pool``: a few decoding threads, fewer slots for large images, waited for until
   the deadline.
3. ``app.core.batching``: each micro-batcher's bounded queue refuses a request that does not
   fit before it is decoded, and drops one whose deadline passes before its batch starts.
4. ``disconnect``: a client that leaves has its work cancelled wherever it is.

Each refusal is a ``ShedError`` (app/core/errors.py), counted by batcher and reason in
``cellsign_shed_requests_total``. The deadline and the queue live in ``app.core`` because the
micro-batcher, which knows nothing of HTTP, enforces them.
"""
