"""The HTTP layer, over the inference core in ``app.core``.

* ``routes/``: the task, gallery and operations endpoints, one module per concern; ``v2/``:
  the Open Inference Protocol. Each route declares what it needs (``route_needs``).
* ``middleware/``: what every request passes before its route; ``overload/``: admission,
  decoding threads and disconnects, the pieces of overload control.
* The request pipeline the routes share: ``inference`` (uploads -> decoding -> batcher ->
  model), ``uploads`` (the input gate for encoded images), ``json_body``, ``numbers``,
  ``ood``, ``deps``, ``errors``, ``schemas``.
* ``service_state``: what a worker serves with, built when the app starts; ``metrics``: its
  Prometheus metrics.
"""
