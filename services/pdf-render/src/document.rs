//! What a template sees: the proposal version as display-ready `data.json`, built from
//! PostgreSQL with totals from `folio_domain::compute_totals` (the API's own function).

use folio_domain::{Currency, LineItemAmounts, compute_totals};
use serde_json::json;
use sqlx::PgPool;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

/// Everything needed to render one rendition.
#[derive(Debug, Clone)]
pub struct RenditionContext {
    pub rendition_id: Uuid,
    pub status: String,
    pub proposal_id: Uuid,
    pub proposal_version: i64,
    /// `None` for the built-in template.
    pub template_body: Option<String>,
    pub logo_svg: Option<String>,
    pub date: Date,
    pub data: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("rendition {0} does not exist")]
    MissingRendition(Uuid),
    #[error("proposal {0} does not exist")]
    MissingProposal(Uuid),
    #[error("template {0} does not exist")]
    MissingTemplate(Uuid),
    #[error("proposal {proposal} is at version {current}; version {requested} is not visible yet")]
    VersionNotYetVisible { proposal: Uuid, requested: i64, current: i64 },
    #[error(
        "proposal {proposal} is at version {current}; version {requested} can no longer be rendered (request a new PDF)"
    )]
    VersionGone { proposal: Uuid, requested: i64, current: i64 },
    #[error("the template of proposal {proposal} changed after the PDF was requested (request a new PDF)")]
    TemplateChanged { proposal: Uuid },
    #[error("stored line item is invalid: {0}")]
    Money(#[from] folio_domain::MoneyError),
    #[error("failed to read the proposal")]
    Db(#[from] sqlx::Error),
}

impl LoadError {
    /// Errors that no retry can fix.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, LoadError::Db(_)) && !self.is_not_visible()
    }

    /// A row the job refers to is not there (yet). A job can arrive before its rows are visible:
    /// the WAL carries a commit slightly before every other session sees it. Transient.
    pub fn is_not_visible(&self) -> bool {
        matches!(
            self,
            LoadError::MissingRendition(_)
                | LoadError::MissingProposal(_)
                | LoadError::MissingTemplate(_)
                | LoadError::VersionNotYetVisible { .. }
        )
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    proposal_id: Uuid,
    version: i64,
    title: String,
    currency: String,
    valid_until: Option<Date>,
    content: String,
    terms: String,
    updated_at: OffsetDateTime,
    subtotal_minor: i64,
    tax_minor: i64,
    total_minor: i64,
    template_body: Option<String>,
    agency_name: String,
    brand_color: String,
    logo_svg: Option<String>,
    client_name: String,
    client_company: String,
    client_email: String,
    owner_name: String,
    owner_email: String,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    position: i32,
    description: String,
    quantity_milli: i64,
    unit_price_minor: i64,
    tax_rate_ppm: i64,
}

/// Loads what a queued rendition needs; its proposal must still be at the requested version.
pub async fn load(pool: &PgPool, rendition_id: Uuid) -> Result<RenditionContext, LoadError> {
    type Requested = (String, Uuid, i64, Option<Uuid>, String, Option<String>);
    let (status, proposal_id, requested, template_id, requested_sha, current_sha): Requested = sqlx::query_as(
        "SELECT r.status, r.proposal_id, r.proposal_version, r.template_id, r.template_sha256, t.body_sha256 \
         FROM pdf_renditions r LEFT JOIN templates t ON t.id = r.template_id WHERE r.id = $1",
    )
    .bind(rendition_id)
    .fetch_optional(pool)
    .await?
    .ok_or(LoadError::MissingRendition(rendition_id))?;
    if let Some(template) = template_id {
        // The rendition is keyed by the template's hash at request time: render that body or none.
        match current_sha {
            // A template cannot be deleted while a rendition refers to it: not visible yet.
            None => return Err(LoadError::MissingTemplate(template)),
            Some(sha) if sha != requested_sha => return Err(LoadError::TemplateChanged { proposal: proposal_id }),
            Some(_) => {}
        }
    }
    let doc = proposal_document(pool, proposal_id, template_id).await?;
    if let Some(template) = template_id
        && doc.template_body.is_none()
    {
        // Never fall back to the built-in template for a rendition keyed by a custom one.
        return Err(LoadError::MissingTemplate(template));
    }
    let current = doc.proposal_version;
    if current > requested {
        return Err(LoadError::VersionGone { proposal: proposal_id, requested, current });
    }
    if current < requested {
        // The request read this version, so it exists: this session does not see it yet.
        return Err(LoadError::VersionNotYetVisible { proposal: proposal_id, requested, current });
    }
    Ok(RenditionContext { rendition_id, status, ..doc })
}

/// The proposal's current version as a document, with the given template (None: built-in).
/// The returned context has a nil rendition id and status "preview".
pub async fn proposal_document(
    pool: &PgPool,
    proposal_id: Uuid,
    template_id: Option<Uuid>,
) -> Result<RenditionContext, LoadError> {
    let row: Row = sqlx::query_as(
        "SELECT p.id AS proposal_id, p.version, p.title, p.currency, p.valid_until, p.content, p.terms, p.updated_at, \
         p.subtotal_minor, p.tax_minor, p.total_minor, t.body AS template_body, a.name AS agency_name, a.brand_color, \
         a.logo_svg, c.name AS client_name, c.company AS client_company, c.email AS client_email, \
         u.name AS owner_name, u.email AS owner_email \
         FROM proposals p JOIN agencies a ON a.id = p.agency_id JOIN clients c ON c.id = p.client_id \
         JOIN users u ON u.id = p.owner_id LEFT JOIN templates t ON t.id = $2 AND t.agency_id = p.agency_id \
         WHERE p.id = $1",
    )
    .bind(proposal_id)
    .bind(template_id)
    .fetch_optional(pool)
    .await?
    .ok_or(LoadError::MissingProposal(proposal_id))?;
    let items: Vec<ItemRow> = sqlx::query_as(
        "SELECT position, description, quantity_milli, unit_price_minor, tax_rate_ppm FROM line_items \
         WHERE proposal_id = $1 ORDER BY position, id",
    )
    .bind(row.proposal_id)
    .fetch_all(pool)
    .await?;

    let currency = Currency::parse(row.currency.trim())?;
    let amounts = items
        .iter()
        .map(|i| LineItemAmounts::parse(i.quantity_milli, i.unit_price_minor, i.tax_rate_ppm))
        .collect::<Result<Vec<_>, _>>()?;
    let totals = compute_totals(&amounts)?;
    if (totals.subtotal_minor, totals.tax_minor, totals.total_minor)
        != (row.subtotal_minor, row.tax_minor, row.total_minor)
    {
        // Cannot happen while the API is the only writer; if it does, the computed figures win.
        tracing::error!(proposal_id = %row.proposal_id, "stored totals differ from the line items");
    }
    let lines: Vec<_> = items
        .iter()
        .zip(&amounts)
        .map(|(item, a)| {
            let line = a.amounts()?;
            Ok(json!({
                "position": item.position,
                "description": item.description,
                "quantity": format_quantity(item.quantity_milli),
                "unit_price": currency.format_minor(item.unit_price_minor),
                "tax_rate": format_rate(item.tax_rate_ppm),
                "subtotal": currency.format_minor(line.subtotal_minor),
                "tax": currency.format_minor(line.tax_minor),
            }))
        })
        .collect::<Result<_, folio_domain::MoneyError>>()?;
    let date = row.updated_at.date();
    let data = json!({
        "agency": { "name": row.agency_name, "brand_color": row.brand_color, "has_logo": row.logo_svg.is_some() },
        "proposal": {
            "id": row.proposal_id,
            "number": row.proposal_id.simple().to_string()[..8].to_uppercase(),
            "title": row.title,
            "version": row.version,
            "currency": currency.code(),
            "date": format_date(date),
            "valid_until": row.valid_until.map(format_date).unwrap_or_else(|| "further notice".into()),
            "content": row.content,
            "terms": row.terms,
        },
        "client": { "name": row.client_name, "company": row.client_company, "email": row.client_email },
        "owner": { "name": row.owner_name, "email": row.owner_email },
        "items": lines,
        "totals": {
            "subtotal": currency.format_minor(totals.subtotal_minor),
            "tax": currency.format_minor(totals.tax_minor),
            "total": currency.format_minor(totals.total_minor),
        },
    });
    Ok(RenditionContext {
        rendition_id: Uuid::nil(),
        status: "preview".into(),
        proposal_id: row.proposal_id,
        proposal_version: row.version,
        template_body: row.template_body,
        logo_svg: row.logo_svg,
        date,
        data,
    })
}

/// What a signed copy is made of: the acceptance's record and the PDF it names.
#[derive(Debug, Clone)]
pub struct SignedCopyContext {
    pub response_id: Uuid,
    pub proposal_id: Uuid,
    pub proposal_version: i64,
    /// The signed PDF, by the name it has in the object store.
    pub original_sha256: String,
    /// Signing day (UTC): the PDF's creation date, so the copy renders the same every time.
    pub date: Date,
    pub data: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum SignedCopyError {
    #[error("acceptance {0} does not exist (yet)")]
    NotVisible(Uuid),
    #[error("response {0} is a decline: there is nothing signed")]
    NotAnAcceptance(Uuid),
    #[error("the signed PDF {0} has no ready rendition on record")]
    UnknownPdf(String),
    #[error("failed to read the acceptance")]
    Db(#[from] sqlx::Error),
}

#[derive(sqlx::FromRow)]
struct SignatureRow {
    proposal_id: Uuid,
    decision: String,
    proposal_version: i64,
    signer_name: Option<String>,
    pdf_sha256: Option<String>,
    ip_address: Option<String>,
    user_agent: Option<String>,
    responded_at: OffsetDateTime,
    link_id: Uuid,
    recipient: String,
    title: String,
    agency_name: String,
    brand_color: String,
    client_name: String,
    client_company: String,
    original_pages: Option<i32>,
}

/// Loads the acceptance `response_id` for its signed copy. Everything on the certificate is
/// read from the record, none of it from the clock, so producing it again gives the same bytes.
pub async fn load_signed_copy(pool: &PgPool, response_id: Uuid) -> Result<SignedCopyContext, SignedCopyError> {
    let row: SignatureRow = sqlx::query_as(
        "SELECT r.proposal_id, r.decision, r.proposal_version, r.signer_name, r.pdf_sha256, host(r.ip_address) AS ip_address, \
         r.user_agent, r.responded_at, r.link_id, l.recipient, p.title, a.name AS agency_name, a.brand_color, \
         c.name AS client_name, c.company AS client_company, \
         (SELECT page_count FROM pdf_renditions WHERE proposal_id = r.proposal_id AND pdf_sha256 = r.pdf_sha256 \
           AND status = 'ready' AND page_count IS NOT NULL LIMIT 1) AS original_pages \
         FROM proposal_responses r JOIN client_links l ON l.id = r.link_id JOIN proposals p ON p.id = r.proposal_id \
         JOIN agencies a ON a.id = r.agency_id JOIN clients c ON c.id = p.client_id WHERE r.id = $1",
    )
    .bind(response_id)
    .fetch_optional(pool)
    .await?
    .ok_or(SignedCopyError::NotVisible(response_id))?;
    let (Some(signer), Some(sha256)) = (row.signer_name.filter(|_| row.decision == "accepted"), row.pdf_sha256) else {
        return Err(SignedCopyError::NotAnAcceptance(response_id));
    };
    let pages = row.original_pages.ok_or_else(|| SignedCopyError::UnknownPdf(sha256.clone()))?;
    let at = row.responded_at.to_offset(time::UtcOffset::UTC);
    let signed_at = format!("{} {:02}:{:02}:{:02} UTC", format_date(at.date()), at.hour(), at.minute(), at.second());
    let data = json!({
        "agency": { "name": row.agency_name, "brand_color": row.brand_color },
        "proposal": {
            "title": row.title,
            "number": row.proposal_id.simple().to_string()[..8].to_uppercase(),
        },
        "client": { "name": row.client_name, "company": row.client_company },
        "original": { "pages": pages },
        "signature": {
            "record_id": response_id,
            "signer_name": signer,
            "signed_at": signed_at,
            "proposal_version": row.proposal_version,
            "document_sha256": sha256,
            // The link's id, never its token (a credential); the first block is enough to tell links apart.
            "link_ref": row.link_id.simple().to_string()[..8].to_owned(),
            "recipient": row.recipient,
            "ip_address": row.ip_address.unwrap_or_else(|| "not recorded".into()),
            "user_agent": row.user_agent.filter(|ua| !ua.trim().is_empty()).unwrap_or_else(|| "not recorded".into()),
        },
    });
    Ok(SignedCopyContext {
        response_id,
        proposal_id: row.proposal_id,
        proposal_version: row.proposal_version,
        original_sha256: sha256,
        date: at.date(),
        data,
    })
}

/// 1500 → "1.5", 2000 → "2", 1250 → "1.25".
pub fn format_quantity(milli: i64) -> String {
    let whole = milli / 1000;
    let frac = (milli % 1000).abs();
    if frac == 0 { whole.to_string() } else { format!("{whole}.{}", format!("{frac:03}").trim_end_matches('0')) }
}

/// 190000 ppm → "19 %", 88750 → "8.875 %".
pub fn format_rate(ppm: i64) -> String {
    let whole = ppm / 10_000;
    let frac = ppm % 10_000;
    if frac == 0 { format!("{whole} %") } else { format!("{whole}.{} %", format!("{frac:04}").trim_end_matches('0')) }
}

pub fn format_date(date: Date) -> String {
    format!("{} {} {}", date.day(), date.month(), date.year())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_a_person_wrote_them() {
        assert_eq!(format_quantity(1_500), "1.5");
        assert_eq!(format_quantity(2_000), "2");
        assert_eq!(format_quantity(1_250), "1.25");
        assert_eq!(format_rate(190_000), "19 %");
        assert_eq!(format_rate(88_750), "8.875 %");
        assert_eq!(format_rate(0), "0 %");
        assert_eq!(format_date(time::macros::date!(2027 - 03 - 31)), "31 March 2027");
    }
}
