-- Rows that exist before the timed run, as after the pipeline bench's setup: 100,000 orders
-- awaiting payment, each with its payment, one line and a held reservation, spread over 64
-- SKUs (so no SKU row is contended: the ceiling is the most generous one).
INSERT INTO skus SELECT 'S' || c, 'Seat', 1000, 'usd', 1000000, 1000000, 0 FROM generate_series(1, 64) c;
INSERT INTO orders SELECT 'o' || n, 'bench@example.com', 'pending_payment', 1000, 'usd', 0, 0
  FROM generate_series(1, 100000) n;
INSERT INTO payments (id, order_id, provider, provider_order_id, status, amount_minor, currency, created_at, updated_at)
  SELECT 'p' || n, 'o' || n, 'stripe', 'cs_' || n, 'pending', 1000, 'usd', 0, 0 FROM generate_series(1, 100000) n;
INSERT INTO order_items SELECT 'o' || n, 1, 'S' || (1 + n % 64), 'Seat', 1, 1000 FROM generate_series(1, 100000) n;
INSERT INTO stock_reservations SELECT 'o' || n, 'S' || (1 + n % 64), 1, 'held', 9999999999999, 0, 0
  FROM generate_series(1, 100000) n;
CREATE SEQUENCE ceiling_order;
ANALYZE;
