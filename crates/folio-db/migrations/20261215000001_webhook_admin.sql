-- Webhook administration through the API (issue 21).
--
-- Endpoints get what an admin edits and reads: a description and the time of the last change.
-- Neither is published on the change stream (the publication keeps its column list).
ALTER TABLE webhook_endpoints
    ADD COLUMN description text NOT NULL DEFAULT '',
    ADD COLUMN updated_at  timestamptz NOT NULL DEFAULT now();

-- Recovery re-delivers an endpoint's failed messages in order of creation: each recovered
-- delivery names the one before it, and is not claimed while that one is still pending or
-- being delivered.
ALTER TABLE notification_deliveries ADD COLUMN after_delivery uuid;

-- An endpoint's deliveries (attempt logs, recovery) without scanning the agency's.
CREATE INDEX notification_deliveries_endpoint ON notification_deliveries (recipient, created_at)
    WHERE channel = 'webhook';
