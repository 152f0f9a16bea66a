"""Razorpay's official Python library against `fulfilld sandbox`.

Proves that the Orders and Payments calls the sandbox implements work through the real
client (Basic auth, JSON, error envelope), and that the sandbox signs webhooks and the
checkout's payment signature exactly as the library verifies them. Run by scripts/test:

    python razorpay_compat.py path/to/fulfilld
"""

import json
import sys
import urllib.request

import razorpay

from sandbox_process import Sandbox

KEY_ID, KEY_SECRET, WEBHOOK_SECRET = "rzp_test_compat", "compat_key_secret", "compat_webhook_secret"


def control(base, path, body):
    req = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def main():
    with Sandbox(sys.argv[1], {
        "FULFILLD__PROVIDERS__RAZORPAY__KEY_ID": KEY_ID,
        "FULFILLD__PROVIDERS__RAZORPAY__KEY_SECRET": KEY_SECRET,
        "FULFILLD__PROVIDERS__RAZORPAY__WEBHOOK_SECRET": WEBHOOK_SECRET,
    }) as sb:
        checks = run(sb.base, sb.received)
    print(f"{checks} passed, 0 failed")


def run(base, received):
    client = razorpay.Client(auth=(KEY_ID, KEY_SECRET), base_url=base)
    n = 0

    order = client.order.create({"amount": 50000, "currency": "INR", "receipt": "ord_compat",
                                 "notes": {"order_id": "ord_compat"}})
    assert order["id"].startswith("order_") and order["entity"] == "order", order
    assert order["amount"] == 50000 and order["status"] == "created", order
    assert client.order.fetch(order["id"])["id"] == order["id"]
    try:
        client.order.create({"amount": 5, "currency": "INR"})
        raise AssertionError("an amount below the minimum must fail")
    except razorpay.errors.BadRequestError:
        pass
    try:
        razorpay.Client(auth=(KEY_ID, "wrong"), base_url=base).order.fetch(order["id"])
        raise AssertionError("a wrong key must fail")
    except razorpay.errors.BadRequestError as e:
        assert "Authentication failed" in str(e), e
    n += 1

    paid = control(base, f"/sandbox/razorpay/orders/{order['id']}/pay", {})
    client.utility.verify_payment_signature({
        "razorpay_order_id": paid["razorpay_order_id"],
        "razorpay_payment_id": paid["razorpay_payment_id"],
        "razorpay_signature": paid["razorpay_signature"],
    })
    try:
        client.utility.verify_payment_signature({
            "razorpay_order_id": paid["razorpay_order_id"],
            "razorpay_payment_id": "pay_someoneelse",
            "razorpay_signature": paid["razorpay_signature"],
        })
        raise AssertionError("a payment signature must not verify for another payment")
    except razorpay.errors.SignatureVerificationError:
        pass
    n += 1

    assert [json.loads(b)["event"] for b, _ in received] == ["payment.authorized", "payment.captured", "order.paid"]
    for body, headers in received:
        sig, event_id = headers.get("X-Razorpay-Signature"), headers.get("x-razorpay-event-id")
        assert event_id and event_id.startswith("evt_"), event_id
        client.utility.verify_webhook_signature(body.decode("utf-8"), sig, WEBHOOK_SECRET)
    try:
        client.utility.verify_webhook_signature(received[0][0].decode("utf-8"), received[0][1].get("X-Razorpay-Signature"), "other")
        raise AssertionError("a webhook must not verify with another secret")
    except razorpay.errors.SignatureVerificationError:
        pass
    n += 1

    payment = client.payment.fetch(paid["razorpay_payment_id"])
    assert payment["status"] == "captured" and payment["order_id"] == order["id"], payment
    listed = client.order.payments(order["id"])
    assert listed["count"] == 1 and listed["items"][0]["id"] == payment["id"], listed
    refund = client.payment.refund(payment["id"], {"amount": 20000, "notes": {"refund_id": "rfd_compat"}})
    assert refund["entity"] == "refund" and refund["status"] == "processed", refund
    assert refund["notes"]["refund_id"] == "rfd_compat", refund
    body, headers = received[-1]
    client.utility.verify_webhook_signature(body.decode("utf-8"), headers.get("X-Razorpay-Signature"), WEBHOOK_SECRET)
    event = json.loads(body)
    assert event["event"] == "refund.processed", event
    assert event["payload"]["refund"]["entity"]["id"] == refund["id"], event
    assert event["payload"]["payment"]["entity"]["id"] == payment["id"], event
    rest = client.payment.refund(payment["id"], {})
    assert rest["amount"] == payment["amount"] - 20000, rest
    n += 1

    manual = client.order.create({"amount": 20000, "currency": "INR", "receipt": "ord_manual"})
    paid = control(base, f"/sandbox/razorpay/orders/{manual['id']}/pay", {"capture": "manual", "webhook": "none"})
    captured = client.payment.capture(paid["razorpay_payment_id"], 20000, {"currency": "INR"})
    assert captured["status"] == "captured", captured
    n += 1
    return n


if __name__ == "__main__":
    main()
