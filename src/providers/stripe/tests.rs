use super::*;

#[test]
fn the_success_url_carries_the_session_id_template() {
    assert_eq!(
        success_url("https://shop.example/ok?order=o1"),
        "https://shop.example/ok?order=o1&session_id={CHECKOUT_SESSION_ID}"
    );
    assert_eq!(
        success_url("https://shop.example/ok#top"),
        "https://shop.example/ok?session_id={CHECKOUT_SESSION_ID}#top"
    );
    let named = "https://shop.example/ok?s={CHECKOUT_SESSION_ID}";
    assert_eq!(success_url(named), named);
}

#[test]
fn a_session_ends_with_its_reservation_within_stripes_range() {
    let now = 1_800_000_000;
    assert_eq!(session_expiry(now + 3600, now), now + 3600);
    assert_eq!(
        session_expiry(now + 60, now),
        now + 1810,
        "at least 30 minutes"
    );
    assert_eq!(
        session_expiry(now + 90_000, now),
        now + 86_390,
        "at most 24 hours"
    );
}

const BODY: &[u8] =
    br#"{"id":"evt_1","object":"event","created":1,"data":{"object":{}},"type":"x"}"#;

#[test]
fn verifies_like_stripe() {
    let secrets = vec!["whsec_new".to_string(), "whsec_old".to_string()];
    let now = 1_700_000_000;
    let good = sign("whsec_old", now - 10, BODY);
    assert_eq!(verify(Some(&good), BODY, &secrets, 300, now), Ok(()));
    // Several v1 entries, one of which matches (Stripe sends one per active secret).
    let sig = good.split_once("v1=").map(|x| x.1).unwrap_or_default();
    let multi = format!("t={},v1={},v1={sig},v0=abc", now - 10, "00".repeat(32));
    assert_eq!(verify(Some(&multi), BODY, &secrets, 300, now), Ok(()));
    assert_eq!(
        verify(None, BODY, &secrets, 300, now),
        Err(SignatureError::Missing)
    );
    assert_eq!(
        verify(Some("garbage"), BODY, &secrets, 300, now),
        Err(SignatureError::Malformed)
    );
    assert_eq!(
        verify(Some("t=abc,v1=00"), BODY, &secrets, 300, now),
        Err(SignatureError::Malformed)
    );
    let old = sign("whsec_new", now - 301, BODY);
    assert_eq!(
        verify(Some(&old), BODY, &secrets, 300, now),
        Err(SignatureError::Stale)
    );
    // A timestamp ahead of the clock is no fresher than one behind it.
    for ahead in [301, 3600, 10 * 365 * 86400] {
        let future = sign("whsec_new", now + ahead, BODY);
        assert_eq!(
            verify(Some(&future), BODY, &secrets, 300, now),
            Err(SignatureError::Stale),
            "t = now + {ahead}"
        );
    }
    let edge = sign("whsec_new", now + 300, BODY);
    assert_eq!(verify(Some(&edge), BODY, &secrets, 300, now), Ok(()));
    assert_eq!(
        verify(
            Some(&format!("t={},v1=00", i64::MIN)),
            BODY,
            &secrets,
            300,
            now
        ),
        Err(SignatureError::Stale)
    );
    let wrong = sign("whsec_other", now, BODY);
    assert_eq!(
        verify(Some(&wrong), BODY, &secrets, 300, now),
        Err(SignatureError::Mismatch)
    );
    let mut tampered = BODY.to_vec();
    tampered[8] = b'2';
    assert_eq!(
        verify(Some(&good), &tampered, &secrets, 300, now),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn normalizes_checkout_events() {
    let ev = |kind: &str, payment_status: &str| {
        serde_json::json!({
            "id": "evt_9", "object": "event", "created": 1, "type": kind,
            "data": {"object": {"id": "cs_1", "object": "checkout.session", "created": 1,
                "expires_at": 2, "livemode": false, "mode": "payment",
                "payment_status": payment_status, "payment_intent": "pi_1"}}
        })
        .to_string()
    };
    let paid = normalize(ev("checkout.session.completed", "paid").as_bytes()).expect("event");
    assert_eq!(
        paid.change,
        PaymentChange::Paid {
            provider_payment_id: Some("pi_1".into())
        }
    );
    assert_eq!(paid.provider_order_id.as_deref(), Some("cs_1"));
    let unpaid = normalize(ev("checkout.session.completed", "unpaid").as_bytes()).expect("event");
    assert!(matches!(
        unpaid.change,
        PaymentChange::AwaitingSettlement { .. }
    ));
    let expired = normalize(ev("checkout.session.expired", "unpaid").as_bytes()).expect("event");
    assert_eq!(expired.change, PaymentChange::Expired);
    let other = normalize(ev("customer.created", "x").as_bytes()).expect("event");
    assert_eq!(other.change, PaymentChange::Ignored);
    assert!(normalize(b"{}").is_err());
    // `metadata` and a refund's `status` are nullable in Stripe's API reference.
    let mut no_metadata: serde_json::Value =
        serde_json::from_str(&ev("checkout.session.completed", "paid")).expect("json");
    no_metadata["data"]["object"]["metadata"] = serde_json::Value::Null;
    let read = normalize(no_metadata.to_string().as_bytes()).expect("metadata: null reads");
    assert_eq!(read.payment_ref, None);
    // A signed session without `created` or `expires_at` is still the payment it says.
    let mut bare = no_metadata.clone();
    for k in ["created", "expires_at"] {
        bare["data"]["object"]
            .as_object_mut()
            .expect("session")
            .remove(k);
    }
    let read = normalize(bare.to_string().as_bytes()).expect("a session without timestamps");
    assert!(
        matches!(read.change, PaymentChange::Paid { .. }),
        "{read:?}"
    );
    let refund = serde_json::json!({
        "id": "evt_r", "object": "event", "created": 1, "type": "refund.updated",
        "data": {"object": {"id": "re_1", "object": "refund", "amount": 100, "created": 1,
            "currency": "usd", "metadata": null, "payment_intent": "pi_1", "status": null}}
    });
    let read = normalize(refund.to_string().as_bytes()).expect("status: null reads");
    assert!(
        matches!(&read.change, PaymentChange::Refunded(n) if n.state == RefundState::Pending),
        "a refund of unknown status is not booked: {:?}",
        read.change
    );
}
