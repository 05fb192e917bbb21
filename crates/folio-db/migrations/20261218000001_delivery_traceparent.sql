-- One trace from click to email (issue 18): a delivery remembers the W3C trace context of the
-- change event that decided it (itself a child of the API call that committed the change, through
-- the WAL), so every attempt to send it, however much later, continues that trace. NULL when the
-- notifier exports no traces.
ALTER TABLE notification_deliveries ADD COLUMN traceparent text;
