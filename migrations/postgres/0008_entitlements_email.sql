-- Access checks (GET /api/entitlements/me) read a buyer's entitlements by email.
CREATE INDEX entitlements_email ON entitlements (customer_email);
