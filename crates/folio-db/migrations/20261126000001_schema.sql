-- Folio's schema. Money is integer minor units, quantities thousandths, tax rates ppm: no floats.

CREATE TABLE agencies (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    brand_color text NOT NULL DEFAULT '#1f4e79' CHECK (brand_color ~ '^#[0-9a-fA-F]{6}$'),
    logo_svg    text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id         uuid PRIMARY KEY,
    agency_id  uuid NOT NULL REFERENCES agencies(id),
    email      text NOT NULL CHECK (position('@' in email) > 1),
    name       text NOT NULL,
    role       text NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agency_id, email)
);
CREATE INDEX users_agency ON users (agency_id);

CREATE TABLE clients (
    id         uuid PRIMARY KEY,
    agency_id  uuid NOT NULL REFERENCES agencies(id),
    name       text NOT NULL,
    email      text NOT NULL,
    company    text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX clients_agency ON clients (agency_id, id);

CREATE TABLE templates (
    id          uuid PRIMARY KEY,
    agency_id   uuid NOT NULL REFERENCES agencies(id),
    name        text NOT NULL,
    body        text NOT NULL,
    body_sha256 text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX templates_agency ON templates (agency_id, id);

CREATE TABLE proposals (
    id             uuid PRIMARY KEY,
    agency_id      uuid NOT NULL REFERENCES agencies(id),
    client_id      uuid NOT NULL REFERENCES clients(id),
    owner_id       uuid NOT NULL REFERENCES users(id),
    template_id    uuid REFERENCES templates(id),
    title          text NOT NULL,
    status         text NOT NULL DEFAULT 'draft'
                   CHECK (status IN ('draft', 'sent', 'viewed', 'accepted', 'declined', 'withdrawn')),
    currency       char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    valid_until    date,
    version        bigint NOT NULL DEFAULT 1,
    content        text NOT NULL DEFAULT '',
    terms          text NOT NULL DEFAULT '',
    -- Written only from folio_domain::compute_totals, in the transaction that changes the items.
    subtotal_minor bigint NOT NULL DEFAULT 0,
    tax_minor      bigint NOT NULL DEFAULT 0,
    total_minor    bigint NOT NULL DEFAULT 0 CHECK (total_minor = subtotal_minor + tax_minor),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    viewed_at      timestamptz,
    accepted_at    timestamptz,
    declined_at    timestamptz,
    withdrawn_at   timestamptz,
    archived_at    timestamptz
);
-- Listing is newest first by id (UUIDv7 is time-ordered), filtered within one agency.
CREATE INDEX proposals_agency_id ON proposals (agency_id, id DESC);
CREATE INDEX proposals_agency_status ON proposals (agency_id, status, id DESC);
CREATE INDEX proposals_agency_client ON proposals (agency_id, client_id, id DESC);
CREATE INDEX proposals_agency_owner ON proposals (agency_id, owner_id, id DESC);
CREATE INDEX proposals_template ON proposals (template_id) WHERE template_id IS NOT NULL;

-- A retried CreateProposal finds its first result here; the fingerprint catches a reused key.
CREATE TABLE proposal_idempotency_keys (
    agency_id   uuid NOT NULL REFERENCES agencies(id),
    key         text NOT NULL,
    fingerprint text NOT NULL,
    proposal_id uuid NOT NULL REFERENCES proposals(id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agency_id, key)
);

CREATE TABLE line_items (
    id               uuid PRIMARY KEY,
    proposal_id      uuid NOT NULL REFERENCES proposals(id) ON DELETE CASCADE,
    agency_id        uuid NOT NULL REFERENCES agencies(id),
    position         integer NOT NULL,
    description      text NOT NULL,
    quantity_milli   bigint NOT NULL CHECK (quantity_milli > 0),
    unit_price_minor bigint NOT NULL,
    tax_rate_ppm     bigint NOT NULL CHECK (tax_rate_ppm BETWEEN 0 AND 1000000),
    subtotal_minor   bigint NOT NULL,
    tax_minor        bigint NOT NULL
);
CREATE INDEX line_items_proposal ON line_items (proposal_id, position);

CREATE TABLE pdf_renditions (
    id               uuid PRIMARY KEY,
    agency_id        uuid NOT NULL REFERENCES agencies(id),
    proposal_id      uuid NOT NULL REFERENCES proposals(id),
    proposal_version bigint NOT NULL,
    template_id      uuid REFERENCES templates(id),
    -- SHA-256 of the template body ('builtin:<name>' hash for the built-in default).
    template_sha256  text NOT NULL,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'rendering', 'ready', 'failed')),
    failure_reason   text,
    pdf_sha256       text,
    size_bytes       bigint,
    page_count       integer,
    requested_by     uuid REFERENCES users(id),
    requested_at     timestamptz NOT NULL DEFAULT now(),
    rendered_at      timestamptz,
    UNIQUE (proposal_id, proposal_version, template_sha256)
);
CREATE INDEX pdf_renditions_agency ON pdf_renditions (agency_id, proposal_id);

CREATE TABLE webhook_endpoints (
    id                         uuid PRIMARY KEY,
    agency_id                  uuid NOT NULL REFERENCES agencies(id),
    url                        text NOT NULL,
    -- Event types the endpoint receives, e.g. {proposal.sent,proposal.accepted}; empty = all.
    event_types                text[] NOT NULL DEFAULT '{}',
    secret                     text NOT NULL,
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    failing_since              timestamptz,
    disabled_at                timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_agency ON webhook_endpoints (agency_id);

CREATE TABLE notification_deliveries (
    id               uuid PRIMARY KEY,
    agency_id        uuid NOT NULL REFERENCES agencies(id),
    -- Nats-Msg-Id of the change event that caused it.
    event_id         text NOT NULL,
    channel          text NOT NULL CHECK (channel IN ('email', 'webhook')),
    -- Email address or webhook endpoint id.
    recipient        text NOT NULL,
    event_type       text NOT NULL,
    proposal_id      uuid,
    payload          jsonb NOT NULL DEFAULT '{}',
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivering', 'delivered', 'failed', 'skipped')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    UNIQUE (event_id, channel, recipient)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE delivery_attempts (
    id             bigserial PRIMARY KEY,
    delivery_id    uuid NOT NULL REFERENCES notification_deliveries(id) ON DELETE CASCADE,
    attempted_at   timestamptz NOT NULL DEFAULT now(),
    succeeded      boolean NOT NULL,
    response_code  integer,
    latency_ms     integer,
    -- At most the first 20 kB of the response body.
    response_body  text,
    error          text
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, attempted_at);

CREATE TABLE notification_preferences (
    user_id    uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    event_type text NOT NULL,
    opted_out  boolean NOT NULL DEFAULT true,
    PRIMARY KEY (user_id, event_type)
);

-- Tables browsers sync and services follow: old rows complete in UPDATE/DELETE events.
ALTER TABLE agencies REPLICA IDENTITY FULL;
ALTER TABLE users REPLICA IDENTITY FULL;
ALTER TABLE clients REPLICA IDENTITY FULL;
ALTER TABLE templates REPLICA IDENTITY FULL;
ALTER TABLE proposals REPLICA IDENTITY FULL;
ALTER TABLE line_items REPLICA IDENTITY FULL;
ALTER TABLE pdf_renditions REPLICA IDENTITY FULL;
ALTER TABLE webhook_endpoints REPLICA IDENTITY FULL;
ALTER TABLE notification_deliveries REPLICA IDENTITY FULL;

-- wal-ingest reads this publication; the shape edge may add tables to it later.
CREATE PUBLICATION folio_changes FOR TABLE
    agencies, users, clients, templates, proposals, line_items, pdf_renditions,
    webhook_endpoints, notification_deliveries;
