-- Webhook signing secrets stay in the database. The change stream is read by other services
-- (docs/events.md) and was carrying `secret` and `previous_secret` in clear text on
-- <root>.changes.webhook_endpoints.*: the table is now published with a column list without
-- them. A column list must cover the replica identity for updates and deletes to be
-- published, so the table's old rows are identified by the primary key (nothing reads its
-- old values from the stream).
ALTER TABLE webhook_endpoints REPLICA IDENTITY DEFAULT;
ALTER PUBLICATION folio_changes DROP TABLE webhook_endpoints;
ALTER PUBLICATION folio_changes ADD TABLE
    webhook_endpoints (id, agency_id, url, event_types, failing_since, disabled_at, created_at);
