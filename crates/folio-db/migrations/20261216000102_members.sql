-- Members and roles through the API (issue 21): invitations and the audit log.
--
-- An invitation is redeemed once with the token of its link; only the token's SHA-256 is
-- stored, and the clear token leaves the API only in the invitation email's job
-- (`folio.jobs.invitation`), never in a row or a change event.
CREATE TABLE invitations (
    id           uuid PRIMARY KEY,
    agency_id    uuid NOT NULL REFERENCES agencies(id) ON DELETE CASCADE,
    email        text NOT NULL CHECK (position('@' in email) > 1),
    role         text NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    token_sha256 bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    invited_by   uuid REFERENCES users(id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    accepted_at  timestamptz,
    -- The member the invitation created.
    user_id      uuid REFERENCES users(id) ON DELETE SET NULL
);
CREATE INDEX invitations_agency ON invitations (agency_id, created_at);

-- Every change to an agency's members, written in the transaction that makes it.
CREATE TABLE audit_events (
    id         uuid PRIMARY KEY,
    agency_id  uuid NOT NULL REFERENCES agencies(id) ON DELETE CASCADE,
    -- Who did it (no foreign key: the record outlives a removed member); NULL for an invitee
    -- accepting, who is `subject_id`.
    actor_id   uuid,
    -- member.invited, member.joined, member.role_changed, member.removed.
    action     text NOT NULL,
    -- The member or invitation acted on.
    subject_id uuid NOT NULL,
    details    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_agency ON audit_events (agency_id, created_at);

ALTER TABLE audit_events REPLICA IDENTITY FULL;

-- Both flow through the WAL; invitations without their token's hash (a column list covers the
-- primary key, the replica identity, so updates are published).
ALTER PUBLICATION folio_changes ADD TABLE
    audit_events,
    invitations (id, agency_id, email, role, invited_by, created_at, expires_at, accepted_at, user_id);
