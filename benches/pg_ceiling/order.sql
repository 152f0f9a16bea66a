-- One paid order's whole fulfilment, as the store must record it: the least the pipeline
-- writes and reads per order, each statement prepared and for one row, in one transaction
-- (the pipeline commits 5 or more times per order, sharing each commit with other orders).
SELECT nextval('ceiling_order') AS n \gset
\set sku 1 + :n % 64
BEGIN;
-- intake: the event, the payment and order transitions, the order's steps
INSERT INTO webhook_events (provider, event_id, event_type, raw_body, payment_id, outcome, received_at)
  VALUES ('stripe', 'evt_' || :n, 'checkout.session.completed', convert_to(repeat('x', 1400), 'UTF8'), 'p' || :n, 'applied', 1);
UPDATE payments SET status = 'paid', provider_payment_id = 'pi_' || :n, updated_at = 1 WHERE id = 'p' || :n AND status IN ('created', 'pending');
UPDATE orders SET status = 'paid', updated_at = 1 WHERE id = 'o' || :n AND status IN ('created', 'pending_payment');
INSERT INTO steps (order_id, payment_id, kind, position, status, next_run_at, enqueued_at, created_at, updated_at) VALUES
  ('o' || :n, 'p' || :n, 'confirm_capture', 10, 'pending', 1, 1, 1, 1), ('o' || :n, 'p' || :n, 'deduct_stock', 20, 'waiting', 1, NULL, 1, 1),
  ('o' || :n, 'p' || :n, 'issue_invoice', 30, 'waiting', 1, NULL, 1, 1), ('o' || :n, 'p' || :n, 'send_receipt', 40, 'waiting', 1, NULL, 1, 1),
  ('o' || :n, 'p' || :n, 'grant_entitlement', 50, 'waiting', 1, NULL, 1, 1);
-- confirm_capture: claim, read the payment, finish, claim the next
UPDATE steps SET status = 'running', attempts = attempts + 1, lease_token = 't', lease_until = 2, updated_at = 1, run_started_at = 1, worker = 'w'
  WHERE order_id = 'o' || :n AND kind = 'confirm_capture' AND payment_id = 'p' || :n AND status = 'pending';
SELECT id, order_id, provider, provider_order_id, provider_payment_id, status, amount_minor, currency, checkout_url FROM payments WHERE id = 'p' || :n;
UPDATE steps SET status = 'done', outcome = 'captured', lease_token = NULL, lease_until = NULL, updated_at = 1
  WHERE order_id = 'o' || :n AND kind = 'confirm_capture' AND payment_id = 'p' || :n AND lease_token = 't';
UPDATE steps SET status = 'running', attempts = attempts + 1, lease_token = 't', lease_until = 2, updated_at = 1
  WHERE order_id = 'o' || :n AND kind = 'deduct_stock' AND payment_id = 'p' || :n;
-- deduct_stock
SELECT order_id, sku, name, qty, unit_price_minor FROM order_items WHERE order_id = 'o' || :n;
UPDATE stock_reservations SET status = 'deducted', updated_at = 1 WHERE order_id = 'o' || :n AND status = 'held';
UPDATE skus SET on_hand = on_hand - 1, reserved = reserved - 1 WHERE sku = 'S' || :sku AND on_hand >= 1 AND reserved >= 1;
UPDATE steps SET status = 'done', outcome = 'deducted', lease_token = NULL, lease_until = NULL, updated_at = 1
  WHERE order_id = 'o' || :n AND kind = 'deduct_stock' AND payment_id = 'p' || :n AND lease_token = 't';
UPDATE steps SET status = 'running', attempts = attempts + 1, lease_token = 't', lease_until = 2, updated_at = 1
  WHERE order_id = 'o' || :n AND kind = 'issue_invoice' AND payment_id = 'p' || :n;
-- issue_invoice: the number, the invoice with its HTML, three ledger rows
INSERT INTO invoice_counters (series, last_number) VALUES ('S' || :sku, 1)
  ON CONFLICT (series) DO UPDATE SET last_number = invoice_counters.last_number + 1 RETURNING last_number;
INSERT INTO invoices (id, series, number, invoice_number, order_id, payment_id, currency, subtotal_minor, tax_minor, total_minor, tax_name, tax_rate_bps, html, issued_at)
  VALUES ('inv' || :n, 'S' || :sku, :n, 'INV-' || :n, 'o' || :n, 'p' || :n, 'usd', 1000, 0, 1000, 'tax', 0, repeat('h', 2000), 1);
INSERT INTO ledger_entries (order_id, reference, account, debit_minor, credit_minor, currency, created_at) VALUES
  ('o' || :n, 'INV', 'receivable', 1000, 0, 'usd', 1), ('o' || :n, 'INV', 'revenue', 0, 1000, 'usd', 1), ('o' || :n, 'INV', 'tax', 0, 0, 'usd', 1);
UPDATE steps SET status = 'done', outcome = 'INV', lease_token = NULL, lease_until = NULL, updated_at = 1
  WHERE order_id = 'o' || :n AND kind = 'issue_invoice' AND payment_id = 'p' || :n AND lease_token = 't';
UPDATE steps SET status = 'pending', next_run_at = 1, enqueued_at = 1, updated_at = 1 WHERE order_id = 'o' || :n AND kind = 'send_receipt' AND payment_id = 'p' || :n;
-- send_receipt: claim, read the lines and the invoice number, record the email, finish
UPDATE steps SET status = 'running', attempts = attempts + 1, lease_token = 't', lease_until = 2, updated_at = 1
  WHERE order_id = 'o' || :n AND kind = 'send_receipt' AND payment_id = 'p' || :n AND status = 'pending';
SELECT o.status, i.name, i.qty, i.unit_price_minor, inv.invoice_number FROM orders o
  LEFT JOIN order_items i ON i.order_id = o.id LEFT JOIN invoices inv ON inv.order_id = o.id WHERE o.id = 'o' || :n;
INSERT INTO emails_sent (payment_id, kind, to_addr, subject, message_id, transport, sent_at)
  VALUES ('p' || :n, 'receipt', 'bench@example.com', 'Your receipt', 'm' || :n, 'file', 1);
UPDATE steps SET status = 'done', outcome = 'sent', lease_token = NULL, lease_until = NULL, updated_at = 1
  WHERE order_id = 'o' || :n AND kind = 'send_receipt' AND payment_id = 'p' || :n AND lease_token = 't';
UPDATE steps SET status = 'running', attempts = attempts + 1, lease_token = 't', lease_until = 2, updated_at = 1
  WHERE order_id = 'o' || :n AND kind = 'grant_entitlement' AND payment_id = 'p' || :n;
-- grant_entitlement, and the order fulfilled
INSERT INTO entitlements (order_id, sku, customer_email, feature, expires_at, granted_at)
  VALUES ('o' || :n, 'S' || :sku, 'bench@example.com', 'pass', NULL, 1);
UPDATE steps SET status = 'done', outcome = 'granted', lease_token = NULL, lease_until = NULL, updated_at = 1
  WHERE order_id = 'o' || :n AND kind = 'grant_entitlement' AND payment_id = 'p' || :n AND lease_token = 't';
UPDATE orders SET status = 'fulfilled', updated_at = 1 WHERE id = 'o' || :n AND status = 'paid';
COMMIT;
