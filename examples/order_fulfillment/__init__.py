"""Order-management example: an order saga and the five HTTP services it calls.

- :mod:`~examples.order_fulfillment.saga`: the saga, a recipe of five steps.
- :mod:`~examples.order_fulfillment.participants`: each participant declared once (its
  service, mount path, endpoints and their request/reply models).
- :mod:`~examples.order_fulfillment.models`: the wire models.
- :mod:`~examples.order_fulfillment.servers`: the participants' HTTP servers, run by
  :mod:`~examples.order_fulfillment.services` (one process, with an admin API).

Nothing is started at import.
"""
