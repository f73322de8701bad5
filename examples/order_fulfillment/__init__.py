"""Order-management example: an order saga and the five HTTP services it calls.

The services (order, inventory, payment, shipping, notification) live in
:mod:`examples.order_fulfillment.services`; their wire models in
:mod:`examples.order_fulfillment.models`. Nothing is started at import.
"""
