-- The currency a refund event kept before its payment was known named (issue 20): once the
-- payment is known, a refund in another currency than the payment's is parked, not booked.
-- NULL for rows kept before this column existed (booked as before).
ALTER TABLE unplaced_refunds ADD COLUMN currency TEXT;
