-- The signed copy of an accepted proposal (issue 20): the exact PDF the client signed, its
-- pages followed by a signature certificate page (signer, time, document hash, version), the
-- original attached inside. Requested in the acceptance's own transaction (a job through the
-- WAL, like every rendition), rendered by pdf-render, emailed to the client and the owner.
CREATE TABLE signed_copies (
    response_id    uuid PRIMARY KEY REFERENCES proposal_responses(id),
    agency_id      uuid NOT NULL REFERENCES agencies(id),
    proposal_id    uuid NOT NULL UNIQUE REFERENCES proposals(id),
    status         text NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'rendering', 'ready', 'failed')),
    failure_reason text,
    pdf_sha256     text CHECK (pdf_sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes     bigint,
    page_count     integer,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    rendered_at    timestamptz
);

ALTER TABLE signed_copies REPLICA IDENTITY FULL;

-- The agency's app follows it like a rendition: the signed copy's readiness and hash are not
-- secrets (the signer's address and user agent stay in proposal_responses, unpublished).
ALTER PUBLICATION folio_changes ADD TABLE signed_copies;
