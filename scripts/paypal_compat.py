"""PayPal's official Python server SDK (paypal-server-sdk) against `fulfilld sandbox`.

Proves that the Orders v2 and Payments v2 calls the sandbox implements work through
PayPal's own client — OAuth client credentials, PayPal-Request-Id idempotency, the
representations, the error envelope with its issues — and that the sandbox holds the SDK
to PayPal's documented rules (capture before approval, one capture per order, refunds up
to what was captured, currency decimals, unsupported currencies). Run by scripts/test:

    python paypal_compat.py path/to/fulfilld
"""

import json
import sys
import urllib.request

from apimatic_core.exceptions.auth_validation_exception import AuthValidationException
from paypalserversdk.configuration import Environment, Server
from paypalserversdk.exceptions.error_exception import ErrorException
from paypalserversdk.http.auth.o_auth_2 import ClientCredentialsAuthCredentials
from paypalserversdk.models.amount_with_breakdown import AmountWithBreakdown
from paypalserversdk.models.checkout_payment_intent import CheckoutPaymentIntent
from paypalserversdk.models.money import Money
from paypalserversdk.models.order_request import OrderRequest
from paypalserversdk.models.purchase_unit_request import PurchaseUnitRequest
from paypalserversdk.models.refund_request import RefundRequest
from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient

from sandbox_process import Sandbox

CLIENT_ID = "paypal_client_compat"
CLIENT_SECRET = "paypal_secret_compat"
REPRESENTATION = "return=representation"


def main():
    with Sandbox(sys.argv[1], {
        "FULFILLD__PROVIDERS__PAYPAL__CLIENT_ID": CLIENT_ID,
        "FULFILLD__PROVIDERS__PAYPAL__CLIENT_SECRET": CLIENT_SECRET,
    }) as sb:
        checks = run(sb.base)
    print(f"{checks} passed, 0 failed")


def client(base, secret=CLIENT_SECRET):
    # The SDK knows PayPal's two hosts only; the sandbox stands in for the sandbox one.
    from paypalserversdk.configuration import Configuration
    Configuration.environments[Environment.SANDBOX][Server.DEFAULT] = base
    return PaypalServersdkClient(
        client_credentials_auth_credentials=ClientCredentialsAuthCredentials(
            o_auth_client_id=CLIENT_ID, o_auth_client_secret=secret),
        environment=Environment.SANDBOX)


def order_request(currency, value, ref="ord_compat"):
    return OrderRequest(
        intent=CheckoutPaymentIntent.CAPTURE,
        purchase_units=[PurchaseUnitRequest(
            amount=AmountWithBreakdown(currency_code=currency, value=value),
            reference_id=ref, custom_id="pay_compat", description=f"Order {ref}")])


def issue(call):
    """The first issue of the PayPal error `call` raises (it must raise)."""
    try:
        call()
    except ErrorException as e:
        assert e.details, (e.response_code, e.message)
        return e.response_code, e.details[0].issue
    raise AssertionError("the call must fail")


def control(base, path, body):
    req = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def run(base):
    pp = client(base)
    orders, payments = pp.orders, pp.payments
    n = 0

    created = orders.create_order({"body": order_request("USD", "10.00"),
                                   "paypal_request_id": "compat-order-1",
                                   "prefer": REPRESENTATION})
    assert created.status_code in (200, 201), created.status_code
    order = created.body
    assert order.id and order.intent == "CAPTURE", order
    assert order.purchase_units[0].amount.value == "10.00", order
    assert any(link.rel in ("approve", "payer-action") for link in order.links), order.links
    n += 1

    again = orders.create_order({"body": order_request("USD", "10.00"),
                                 "paypal_request_id": "compat-order-1",
                                 "prefer": REPRESENTATION})
    assert again.body.id == order.id, "the same PayPal-Request-Id, the same order"
    got = orders.get_order({"id": order.id})
    assert got.body.id == order.id and got.body.status == order.status, got.body
    assert issue(lambda: orders.get_order({"id": "5O190127TN364715T"}))[0] == 404
    n += 1

    # A wrong secret gets no token (the sandbox's /v1/oauth2/token answers 401
    # invalid_client), so the SDK refuses to call at all.
    try:
        client(base, "wrong").orders.get_order({"id": order.id})
        raise AssertionError("a wrong client secret must not get an order")
    except AuthValidationException:
        pass
    client(base)  # the right one again, for what follows
    n += 1

    # PayPal's documented refusals: capture before approval; decimals a currency does not
    # have; a currency PayPal does not take.
    assert issue(lambda: orders.capture_order({"id": order.id, "prefer": REPRESENTATION})) \
        == (422, "ORDER_NOT_APPROVED")
    assert issue(lambda: orders.create_order({"body": order_request("HUF", "1000.50")})) \
        == (422, "DECIMAL_PRECISION")
    assert issue(lambda: orders.create_order({"body": order_request("KRW", "5000")})) \
        == (422, "CURRENCY_NOT_SUPPORTED")
    whole = orders.create_order({"body": order_request("JPY", "500"), "prefer": REPRESENTATION})
    assert whole.body.purchase_units[0].amount.value == "500", whole.body
    n += 1

    control(base, f"/sandbox/paypal/orders/{order.id}/approve", {"webhook": "none"})
    captured = orders.capture_order({"id": order.id, "paypal_request_id": "compat-capture-1",
                                     "prefer": REPRESENTATION})
    assert captured.body.status == "COMPLETED", captured.body
    capture = captured.body.purchase_units[0].payments.captures[0]
    assert capture.status == "COMPLETED" and capture.amount.value == "10.00", capture
    assert issue(lambda: orders.capture_order({"id": order.id, "prefer": REPRESENTATION})) \
        == (422, "ORDER_ALREADY_CAPTURED")
    got = payments.get_captured_payment({"capture_id": capture.id})
    assert got.body.id == capture.id and got.body.status == "COMPLETED", got.body
    n += 1

    refund = payments.refund_captured_payment({
        "capture_id": capture.id,
        "body": RefundRequest(amount=Money(currency_code="USD", value="2.50"),
                              custom_id="rfd_compat"),
        "paypal_request_id": "compat-refund-1", "prefer": REPRESENTATION})
    assert refund.body.status == "COMPLETED", refund.body
    assert refund.body.amount.value == "2.50", refund.body
    same = payments.refund_captured_payment({
        "capture_id": capture.id,
        "body": RefundRequest(amount=Money(currency_code="USD", value="2.50"),
                              custom_id="rfd_compat"),
        "paypal_request_id": "compat-refund-1", "prefer": REPRESENTATION})
    assert same.body.id == refund.body.id, "the same PayPal-Request-Id, the same refund"
    assert issue(lambda: payments.refund_captured_payment({
        "capture_id": capture.id,
        "body": RefundRequest(amount=Money(currency_code="USD", value="7.51")),
        "prefer": REPRESENTATION})) == (422, "REFUND_AMOUNT_EXCEEDED")
    n += 1
    return n


if __name__ == "__main__":
    main()
