-- Generic plans for the statements of every send and ack. The acks of
-- many devices and chats go in one statement, one transaction and one
-- commit (the pending acks of a worker's pass of its event loop):
-- chat_ack_batch, with the receipts (008).

-- The hot functions are called with new values every time; left to
-- themselves, PL/pgSQL's plan cache keeps planning their statements anew
-- (custom plans look cheaper for the values at hand), which cost more
-- than running them. Their statements are all keyed lookups of a few
-- rows: sequential scans are off for them, since the statistics of
-- tables that churn as fast as messages and cursors (a row in, a row out)
-- say "empty" as often as not, and a plan made on that reads every dead
-- row on every call.
ALTER FUNCTION chat_trim(bigint, bigint)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION chat_trim(bigint, bigint) SET enable_seqscan = off;


-- chat_send_batch gets the same settings with its new version (010).


-- chat_ack (005) is replaced by chat_ack_batch (008).
DROP FUNCTION IF EXISTS chat_ack(bigint, bigint, bigint);
