-- The client's side (issue 20): capability links, every open of one, and e-signatures.

-- One link per recipient and send. The token is never stored: only its SHA-256 (the token
-- itself is derived from the id with a secret only proposals-api and the notifier hold, see
-- folio_auth::client_link). Revoked on withdraw and archive, replaced on a new send.
CREATE TABLE client_links (
    id             uuid PRIMARY KEY,
    agency_id      uuid NOT NULL REFERENCES agencies(id),
    proposal_id    uuid NOT NULL REFERENCES proposals(id),
    recipient      text NOT NULL,
    -- The proposal's version the send produced: the notifier finds the link of a sent event by it.
    issued_version bigint NOT NULL,
    token_sha256   bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz
);
CREATE INDEX client_links_proposal ON client_links (proposal_id, issued_version);

-- Every open of the client's page: when, through which link, on what kind of device. No IP
-- address and no raw user agent.
CREATE TABLE proposal_views (
    id           uuid PRIMARY KEY,
    agency_id    uuid NOT NULL REFERENCES agencies(id),
    proposal_id  uuid NOT NULL REFERENCES proposals(id),
    link_id      uuid NOT NULL REFERENCES client_links(id),
    viewed_at    timestamptz NOT NULL DEFAULT now(),
    device_class text NOT NULL CHECK (device_class IN ('desktop', 'mobile', 'tablet', 'bot', 'unknown'))
);
CREATE INDEX proposal_views_proposal ON proposal_views (proposal_id, viewed_at);

-- The client's answer. At most one per proposal (two tabs accepting at once record one). An
-- acceptance is an e-signature: the typed name, consent, the version and the SHA-256 of the
-- exact PDF the page showed, the link used, and the signer's IP address and user agent (the
-- one place an address is kept: the audit of a signature).
CREATE TABLE proposal_responses (
    id               uuid PRIMARY KEY,
    agency_id        uuid NOT NULL REFERENCES agencies(id),
    proposal_id      uuid NOT NULL UNIQUE REFERENCES proposals(id),
    link_id          uuid NOT NULL REFERENCES client_links(id),
    decision         text NOT NULL CHECK (decision IN ('accepted', 'declined')),
    proposal_version bigint NOT NULL,
    signer_name      text CHECK (length(signer_name) BETWEEN 1 AND 200),
    consent          boolean NOT NULL DEFAULT false,
    pdf_sha256       text CHECK (pdf_sha256 ~ '^[0-9a-f]{64}$'),
    decline_reason   text CHECK (length(decline_reason) <= 2000),
    ip_address       inet,
    user_agent       text,
    responded_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (decision <> 'accepted' OR (signer_name IS NOT NULL AND consent AND pdf_sha256 IS NOT NULL))
);
