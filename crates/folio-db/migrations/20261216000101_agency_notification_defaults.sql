-- Notification preferences through the API (issue 21): an agency's admins choose which
-- optional emails its users receive unless a user chose otherwise. A user's own row in
-- notification_preferences (opted_out true or false) wins over the agency's default; with
-- neither, the email is sent. Mandatory emails (folio_domain::notifications) ignore both.
CREATE TABLE agency_notification_defaults (
    agency_id  uuid NOT NULL REFERENCES agencies(id) ON DELETE CASCADE,
    event_type text NOT NULL,
    enabled    boolean NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agency_id, event_type)
);
