-- notifier: leases so a delivery is attempted by one replica at a time and a crashed replica's
-- claim expires; the position in the retry schedule (a manual retry gets exactly one attempt);
-- the last error for operators.
ALTER TABLE notification_deliveries
    ADD COLUMN lease_owner      uuid,
    ADD COLUMN lease_expires_at timestamptz,
    ADD COLUMN retry_step       integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error       text;

-- Claims whose holder died are found by their lease expiry.
CREATE INDEX notification_deliveries_leased ON notification_deliveries (lease_expires_at) WHERE status = 'delivering';
-- The API's per-agency listing and the endpoint's backlog.
CREATE INDEX notification_deliveries_agency ON notification_deliveries (agency_id, created_at DESC);
