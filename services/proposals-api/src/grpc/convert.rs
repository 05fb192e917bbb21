//! Stored rows → wire messages.

use folio_proto::api::v1 as pb;
use time::OffsetDateTime;

use crate::store::{
    clients::ClientRow,
    proposals::{LineItemRow, ProposalRecord},
    renditions::RenditionRow,
    templates::TemplateRow,
};

pub fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.unix_timestamp(), nanos: t.nanosecond() as i32 }
}

fn opt_timestamp(t: Option<OffsetDateTime>) -> Option<prost_types::Timestamp> {
    t.map(timestamp)
}

pub fn status_to_pb(status: folio_domain::ProposalStatus) -> pb::ProposalStatus {
    use folio_domain::ProposalStatus as S;
    match status {
        S::Draft => pb::ProposalStatus::Draft,
        S::Sent => pb::ProposalStatus::Sent,
        S::Viewed => pb::ProposalStatus::Viewed,
        S::Accepted => pb::ProposalStatus::Accepted,
        S::Declined => pb::ProposalStatus::Declined,
        S::Withdrawn => pb::ProposalStatus::Withdrawn,
    }
}

pub fn status_from_pb(status: pb::ProposalStatus) -> Option<folio_domain::ProposalStatus> {
    use folio_domain::ProposalStatus as S;
    Some(match status {
        pb::ProposalStatus::Unspecified => return None,
        pb::ProposalStatus::Draft => S::Draft,
        pb::ProposalStatus::Sent => S::Sent,
        pb::ProposalStatus::Viewed => S::Viewed,
        pb::ProposalStatus::Accepted => S::Accepted,
        pb::ProposalStatus::Declined => S::Declined,
        pb::ProposalStatus::Withdrawn => S::Withdrawn,
    })
}

fn line_item(row: &LineItemRow) -> pb::LineItem {
    pb::LineItem {
        id: row.id.to_string(),
        position: row.position,
        description: row.description.clone(),
        quantity_milli: row.quantity_milli,
        unit_price_minor: row.unit_price_minor,
        tax_rate_ppm: row.tax_rate_ppm,
        subtotal_minor: row.subtotal_minor,
        tax_minor: row.tax_minor,
    }
}

pub fn proposal(record: &ProposalRecord) -> pb::Proposal {
    let p = &record.proposal;
    let status = p.status.parse().map(status_to_pb).unwrap_or(pb::ProposalStatus::Unspecified);
    pb::Proposal {
        id: p.id.to_string(),
        agency_id: p.agency_id.to_string(),
        client_id: p.client_id.to_string(),
        owner_id: p.owner_id.to_string(),
        template_id: p.template_id.map(|t| t.to_string()).unwrap_or_default(),
        title: p.title.clone(),
        status: status as i32,
        currency: p.currency.clone(),
        valid_until: p.valid_until.map(|d| d.to_string()).unwrap_or_default(),
        version: p.version,
        content: p.content.clone(),
        terms: p.terms.clone(),
        line_items: record.line_items.iter().map(line_item).collect(),
        totals: Some(pb::Totals {
            subtotal_minor: p.subtotal_minor,
            tax_minor: p.tax_minor,
            total_minor: p.total_minor,
        }),
        created_at: Some(timestamp(p.created_at)),
        updated_at: Some(timestamp(p.updated_at)),
        sent_at: opt_timestamp(p.sent_at),
        viewed_at: opt_timestamp(p.viewed_at),
        accepted_at: opt_timestamp(p.accepted_at),
        declined_at: opt_timestamp(p.declined_at),
        withdrawn_at: opt_timestamp(p.withdrawn_at),
        archived_at: opt_timestamp(p.archived_at),
    }
}

pub fn client(row: ClientRow) -> pb::Client {
    pb::Client {
        id: row.id.to_string(),
        agency_id: row.agency_id.to_string(),
        name: row.name,
        email: row.email,
        company: row.company,
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}

pub fn template(row: TemplateRow) -> pb::Template {
    pb::Template {
        id: row.id.to_string(),
        agency_id: row.agency_id.to_string(),
        name: row.name,
        body: row.body,
        body_sha256: row.body_sha256,
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}

pub fn rendition_status(status: &str) -> pb::RenditionStatus {
    match status {
        "queued" => pb::RenditionStatus::Queued,
        "rendering" => pb::RenditionStatus::Rendering,
        "ready" => pb::RenditionStatus::Ready,
        "failed" => pb::RenditionStatus::Failed,
        _ => pb::RenditionStatus::Unspecified,
    }
}

pub fn rendition(row: RenditionRow) -> pb::Rendition {
    pb::Rendition {
        id: row.id.to_string(),
        proposal_id: row.proposal_id.to_string(),
        proposal_version: row.proposal_version,
        status: rendition_status(&row.status) as i32,
        failure_reason: row.failure_reason.unwrap_or_default(),
        pdf_sha256: row.pdf_sha256.unwrap_or_default(),
        size_bytes: row.size_bytes.unwrap_or_default(),
        page_count: row.page_count.unwrap_or_default(),
        requested_at: Some(timestamp(row.requested_at)),
        rendered_at: opt_timestamp(row.rendered_at),
    }
}
