"""Stripe's official Python library against `fulfilld sandbox`.

Proves that the calls the sandbox implements work through the real client library
(form encoding, auth, idempotency, error envelope) and that the sandbox's webhooks verify
with the library's own `Webhook.construct_event`. Run by scripts/test:

    python stripe_compat.py path/to/fulfilld
"""

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import stripe

SECRET_KEY = "sk_test_compat"
WEBHOOK_SECRET = "whsec_compat"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


received = []


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        received.append((body, self.headers.get("Stripe-Signature")))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def main():
    binary = sys.argv[1]
    sandbox_port, hook_port = free_port(), free_port()
    hook = http.server.HTTPServer(("127.0.0.1", hook_port), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    env = dict(os.environ)
    env.update({
        "FULFILLD__SANDBOX__ADDR": f"127.0.0.1:{sandbox_port}",
        "FULFILLD__SANDBOX__WEBHOOK_TARGET": f"http://127.0.0.1:{hook_port}",
        "FULFILLD__PROVIDERS__STRIPE__SECRET_KEY": SECRET_KEY,
        "FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS": WEBHOOK_SECRET,
        "RUST_LOG": "warn",
    })
    sandbox = subprocess.Popen([binary, "sandbox"], env=env)
    base = f"http://127.0.0.1:{sandbox_port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", sandbox_port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("sandbox did not start")
                time.sleep(0.05)
        checks = run(base)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
        hook.shutdown()
    print(f"{checks} passed, 0 failed")


def run(base):
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
    body, sig = received[-1]
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
    refund = stripe.Refund.create(payment_intent=pi, idempotency_key="compat-refund")
    assert refund.object == "refund" and refund.status == "succeeded" and refund.amount == 3250
    same = stripe.Refund.create(payment_intent=pi, idempotency_key="compat-refund")
    assert same.id == refund.id, "same key, same refund"
    try:
        stripe.Refund.create(payment_intent=pi)
        raise AssertionError("a second refund of the whole payment must fail")
    except stripe.error.InvalidRequestError:
        pass
    n += 1

    expiring = stripe.checkout.Session.create(**params)
    expired = stripe.checkout.Session.expire(expiring.id)
    assert expired.status == "expired", expired
    event = stripe.Webhook.construct_event(received[-1][0].decode("utf-8"), received[-1][1], WEBHOOK_SECRET)
    assert event.type == "checkout.session.expired"
    n += 1
    return n


if __name__ == "__main__":
    main()
