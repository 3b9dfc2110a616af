-- An order's fills and its end: reserved exposure becomes position, what is left is released.
-- Idempotent: ARGV carries the cumulative filled quantity, so a report applied twice (or a
-- release after the final report) changes nothing.
-- KEYS: risk, expo, resv
-- ARGV: client_order_id, cumulative filled qty (scaled, '' unknown), final ('1' or '0'),
--       mark price ('' keeps the stored one)
-- Returns 1 if the reservation changed, else 0.
return settle(KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
