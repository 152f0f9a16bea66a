"""Stripe's official Python library against `fulfilld sandbox`.

Proves that the calls the sandbox implements work through the real client library
(form encoding, auth, idempotency, error envelope) and that the sandbox's webhooks verify
with the library's own `Webhook.construct_event`. Run by scripts/test:

    python stripe_compat.py path/to/fulfilld
"""

import json
import sys
import urllib.request

import stripe

from sandbox_process import Sandbox

SECRET_KEY = "sk_test_compat"
WEBHOOK_SECRET = "whsec_compat"


def main():
    with Sandbox(sys.argv[1], {
        "FULFILLD__PROVIDERS__STRIPE__SECRET_KEY": SECRET_KEY,
        "FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS": WEBHOOK_SECRET,
    }) as sb:
        checks = run(sb.base, sb.received)
    print(f"{checks} passed, 0 failed")


def run(base, received):
    stripe.api_key = SECRET_KEY
    stripe.api_base = base
    stripe.max_network_retries = 0
    n = 0

    params = dict(
        mode="payment",
        success_url="https://shop.example/ok",
        cancel_url="https://shop.example/cancel",
        client_reference_id="ord_compat",
        customer_email="buyer@example.com",
        metadata={"order_id": "ord_compat"},
        line_items=[
            {"quantity": 2, "price_data": {"currency": "usd", "unit_amount": 1500,
                                           "product_data": {"name": "Seat"}}},
            {"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 250,
                                           "product_data": {"name": "Sticker"}}},
        ],
    )
    session = stripe.checkout.Session.create(idempotency_key="compat-1", **params)
    assert session.object == "checkout.session", session
    assert session.amount_total == 3250 and session.currency == "usd", session
    assert session.status == "open" and session.payment_status == "unpaid", session
    assert session.metadata["order_id"] == "ord_compat", session
    n += 1

    again = stripe.checkout.Session.create(idempotency_key="compat-1", **params)
    assert again.id == session.id, "same idempotency key, same session"
    try:
        stripe.checkout.Session.create(idempotency_key="compat-1", **dict(params, customer_email="x@example.com"))
        raise AssertionError("reusing a key with other parameters must fail")
    except stripe.error.IdempotencyError:
        pass
    n += 1

    got = stripe.checkout.Session.retrieve(session.id)
    assert got.id == session.id and got.amount_total == 3250
    try:
        stripe.checkout.Session.retrieve("cs_test_missing")
        raise AssertionError("missing session must fail")
    except stripe.error.InvalidRequestError as e:
        assert e.http_status == 404, e
    try:
        stripe.checkout.Session.retrieve(session.id, api_key="sk_test_wrong")
        raise AssertionError("a wrong key must fail")
    except stripe.error.AuthenticationError as e:
        assert e.http_status == 401, e
    n += 1

    req = urllib.request.Request(
        f"{base}/sandbox/stripe/checkout/sessions/{session.id}/pay",
        data=b"{}", method="POST", headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        paid = json.load(r)
    assert paid["deliveries"] == [{"status": 200}], paid
    body, headers = received[-1]
    sig = headers.get("Stripe-Signature")
    event = stripe.Webhook.construct_event(body.decode("utf-8"), sig, WEBHOOK_SECRET)
    assert event.type == "checkout.session.completed", event
    assert event.data.object.id == session.id and event.data.object.payment_status == "paid"
    try:
        stripe.Webhook.construct_event(body.decode("utf-8"), sig, "whsec_other")
        raise AssertionError("a webhook must not verify with another secret")
    except stripe.error.SignatureVerificationError:
        pass
    n += 1

    pi = stripe.checkout.Session.retrieve(session.id).payment_intent
    assert pi and pi.startswith("pi_"), pi
    refund = stripe.Refund.create(payment_intent=pi, amount=1000, metadata={"refund_id": "rfd_compat"},
                                  idempotency_key="compat-refund")
    assert refund.object == "refund" and refund.status == "succeeded" and refund.amount == 1000
    assert refund.metadata["refund_id"] == "rfd_compat", refund
    same = stripe.Refund.create(payment_intent=pi, amount=1000, metadata={"refund_id": "rfd_compat"},
                                idempotency_key="compat-refund")
    assert same.id == refund.id, "same key, same refund"
    event = stripe.Webhook.construct_event(received[-1][0].decode("utf-8"),
                                           received[-1][1].get("Stripe-Signature"), WEBHOOK_SECRET)
    assert event.type == "refund.created" and event.data.object.id == refund.id, event
    assert event.data.object.metadata["refund_id"] == "rfd_compat", event
    try:
        stripe.Refund.create(payment_intent=pi, amount=2251)
        raise AssertionError("refunding more than is left must fail")
    except stripe.error.InvalidRequestError as e:
        assert e.param == "amount", e
    rest = stripe.Refund.create(payment_intent=pi)
    assert rest.amount == 2250, rest
    try:
        stripe.Refund.create(payment_intent=pi)
        raise AssertionError("a refund of a fully refunded payment must fail")
    except stripe.error.InvalidRequestError:
        pass
    n += 1

    expiring = stripe.checkout.Session.create(**params)
    expired = stripe.checkout.Session.expire(expiring.id)
    assert expired.status == "expired", expired
    event = stripe.Webhook.construct_event(received[-1][0].decode("utf-8"),
                                           received[-1][1].get("Stripe-Signature"), WEBHOOK_SECRET)
    assert event.type == "checkout.session.expired"
    n += 1
    return n


if __name__ == "__main__":
    main()
