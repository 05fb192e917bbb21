-- An admin can revoke an invitation before it is accepted (issue 21); a resend replaces its
-- token (the old link stops working) and its expiry. A revoked invitation answers like an
-- unknown one.
ALTER TABLE invitations ADD COLUMN revoked_at timestamptz;

-- The published column list gains it (still without the token's hash).
ALTER PUBLICATION folio_changes DROP TABLE invitations;
ALTER PUBLICATION folio_changes ADD TABLE
    invitations (id, agency_id, email, role, invited_by, created_at, expires_at, accepted_at, user_id, revoked_at);

-- The audit trail is read newest first, a page at a time (ListAuditEvents).
CREATE INDEX audit_events_agency_id ON audit_events (agency_id, id DESC);
