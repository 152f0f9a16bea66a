//! `send_receipt`: the one email a buyer gets for a payment — a receipt when the order was
//! fulfilled, a refund notice when it could not be (or was refunded before it was), and
//! from `notify_payment_failed` the notice that a payment failed. An email cannot be un-sent, so the step
//! records it in `emails_sent` (unique per payment and kind) in the transaction that marks
//! the step done, and gives the message a deterministic `Message-ID` so that the rare resend
//! after a crash between "sent" and "recorded" is recognisable as the same message.

use crate::RetryPolicy;

/// SMTP servers greylist and rate-limit, and a mail relay's outage can last hours: be
/// patient. Waits of at most 5 s, 10 s, 20 s … 43 min, then hourly: dead after about 5.4 h
/// at worst (2.7 h expected).
pub const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 15,
    base_ms: 5_000,
    cap_ms: 3_600_000,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Receipt,
    RefundNotice,
    /// The payment failed, was declined, or the checkout expired: nothing was charged.
    PaymentFailed,
    /// Money went back for an order the buyer already had a receipt for (an admin's refund,
    /// one made on the provider's dashboard, a duplicate payment). One per refund.
    Refunded,
}

impl Kind {
    /// Stored in `emails_sent.kind`: one email of each kind per payment.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Receipt => "receipt",
            Kind::RefundNotice => "refund_notice",
            Kind::PaymentFailed => "payment_failed",
            Kind::Refunded => "refund",
        }
    }
}

/// One order line as the buyer sees it.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    pub qty: i64,
    pub amount: String,
}

/// Everything the email says; amounts arrive already formatted for the currency.
#[derive(Debug, Clone)]
pub struct Content {
    pub kind: Kind,
    pub order_id: String,
    pub invoice_number: Option<String>,
    pub lines: Vec<Line>,
    pub total: String,
    /// For a refund notice: the refund was ours because an item sold out.
    pub sold_out: bool,
    /// For a refund: its credit note.
    pub credit_note: Option<String>,
}

/// Subject and plain-text body.
pub fn render(c: &Content) -> (String, String) {
    let mut body = String::new();
    let subject = match c.kind {
        Kind::Receipt => {
            body.push_str("Thank you for your order. Your payment was received.\n\n");
            format!("Your receipt for order {}", c.order_id)
        }
        Kind::RefundNotice => {
            if c.sold_out {
                body.push_str(
                    "We are sorry: an item in your order sold out before we could reserve it for you.\n",
                );
            }
            body.push_str(
                "Your payment has been refunded in full; it will appear on your statement in a few days.\n\n",
            );
            format!("Your order {} was refunded", c.order_id)
        }
        Kind::PaymentFailed => {
            body.push_str(
                "Your payment could not be completed, and you have not been charged.\n\
                 The items we held for you are released; you can try again from your order.\n\n",
            );
            format!("Your payment for order {} did not go through", c.order_id)
        }
        Kind::Refunded => {
            body.push_str(&format!(
                "We have refunded {} of your payment; it will appear on your statement in a few days.\n\n",
                c.total
            ));
            format!("A refund for order {}", c.order_id)
        }
    };
    body.push_str(&format!("Order: {}\n", c.order_id));
    if let Some(n) = &c.invoice_number {
        body.push_str(&format!("Invoice: {n}\n"));
    }
    if let Some(n) = &c.credit_note {
        body.push_str(&format!("Credit note: {n}\n"));
    }
    body.push('\n');
    for l in &c.lines {
        body.push_str(&format!("  {} x {}  {}\n", l.qty, l.name, l.amount));
    }
    let label = match c.kind {
        Kind::Receipt => "Total paid",
        Kind::RefundNotice => "Refunded",
        Kind::PaymentFailed => "Not charged",
        Kind::Refunded => "Refunded",
    };
    body.push_str(&format!("\n{label}: {}\n", c.total));
    (subject, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_and_refund_notice_say_different_things() {
        let mut c = Content {
            kind: Kind::Receipt,
            order_id: "ord_1".into(),
            invoice_number: Some("INV-000001".into()),
            lines: vec![Line {
                name: "Seat".into(),
                qty: 2,
                amount: "20.00 USD".into(),
            }],
            total: "20.00 USD".into(),
            sold_out: true,
            credit_note: None,
        };
        let (s, b) = render(&c);
        assert!(
            s.contains("receipt")
                && b.contains("INV-000001")
                && b.contains("Total paid: 20.00 USD")
        );
        c.kind = Kind::RefundNotice;
        c.invoice_number = None;
        let (s, b) = render(&c);
        assert!(
            s.contains("refunded") && b.contains("Refunded: 20.00 USD") && !b.contains("Invoice")
        );
        assert!(b.contains("sold out"));
        c.sold_out = false;
        assert!(!render(&c).1.contains("sold out"));
        c.kind = Kind::PaymentFailed;
        let (s, b) = render(&c);
        assert!(s.contains("did not go through") && b.contains("Not charged: 20.00 USD"));
        c.kind = Kind::Refunded;
        c.total = "5.00 USD".into();
        c.credit_note = Some("INV-CN-000001".into());
        let (s, b) = render(&c);
        assert!(s.contains("refund") && b.contains("refunded 5.00 USD"));
        assert!(b.contains("Credit note: INV-CN-000001") && b.contains("Refunded: 5.00 USD"));
    }
}
