//! Proposals and their line items. Every edit locks the proposal row, checks the version and
//! state, applies the change, recomputes totals with `folio_domain::compute_totals` and bumps
//! the version — all in one transaction, so concurrent edits serialise and totals never tear.

use folio_domain::{
    AgencyId, ClientId, Currency, LineItemAmounts, LineItemId, ProposalId, ProposalStatus, TemplateId, UserId,
    compute_totals,
};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use super::Committed;
use crate::error::{ApiError, is_unique_violation};

const PROPOSAL_COLUMNS: &str = "id, agency_id, client_id, owner_id, template_id, title, status, currency, valid_until, \
     version, content, terms, subtotal_minor, tax_minor, total_minor, created_at, updated_at, sent_at, viewed_at, \
     accepted_at, declined_at, withdrawn_at, archived_at";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProposalRow {
    pub id: Uuid,
    pub agency_id: Uuid,
    pub client_id: Uuid,
    pub owner_id: Uuid,
    pub template_id: Option<Uuid>,
    pub title: String,
    pub status: String,
    pub currency: String,
    pub valid_until: Option<Date>,
    pub version: i64,
    pub content: String,
    pub terms: String,
    pub subtotal_minor: i64,
    pub tax_minor: i64,
    pub total_minor: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub sent_at: Option<OffsetDateTime>,
    pub viewed_at: Option<OffsetDateTime>,
    pub accepted_at: Option<OffsetDateTime>,
    pub declined_at: Option<OffsetDateTime>,
    pub withdrawn_at: Option<OffsetDateTime>,
    pub archived_at: Option<OffsetDateTime>,
}

impl ProposalRow {
    pub fn status(&self) -> Result<ProposalStatus, ApiError> {
        self.status.parse().map_err(|e| ApiError::Db(sqlx::Error::Decode(format!("proposals.status: {e}").into())))
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LineItemRow {
    pub id: Uuid,
    pub proposal_id: Uuid,
    pub position: i32,
    pub description: String,
    pub quantity_milli: i64,
    pub unit_price_minor: i64,
    pub tax_rate_ppm: i64,
    pub subtotal_minor: i64,
    pub tax_minor: i64,
}

/// A proposal with its line items in order.
#[derive(Debug, Clone)]
pub struct ProposalRecord {
    pub proposal: ProposalRow,
    pub line_items: Vec<LineItemRow>,
}

/// A validated line item ready to store.
#[derive(Debug, Clone)]
pub struct NewLineItem {
    pub description: String,
    pub amounts: LineItemAmounts,
}

#[derive(Debug, Clone)]
pub struct NewProposal {
    pub client_id: ClientId,
    pub template_id: Option<TemplateId>,
    pub title: String,
    pub currency: String,
    pub valid_until: Option<Date>,
    pub content: String,
    pub terms: String,
    pub line_items: Vec<NewLineItem>,
}

/// The proposal fields an update may set; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProposalChanges {
    pub title: Option<String>,
    pub client_id: Option<ClientId>,
    pub currency: Option<String>,
    /// `Some(None)` clears the expiry.
    pub valid_until: Option<Option<Date>>,
    pub content: Option<String>,
    pub terms: Option<String>,
    /// `Some(None)` returns to the built-in template.
    pub template_id: Option<Option<TemplateId>>,
}

#[derive(Debug, Clone, Default)]
pub struct LineItemChanges {
    pub description: Option<String>,
    pub quantity_milli: Option<i64>,
    pub unit_price_minor: Option<i64>,
    pub tax_rate_ppm: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct ProposalFilter {
    pub status: Option<ProposalStatus>,
    pub client_id: Option<ClientId>,
    pub owner_id: Option<UserId>,
    pub include_archived: bool,
}

pub struct IdempotencyKey {
    pub key: String,
    /// Hash of the request, so a key reused for a different request is refused.
    pub fingerprint: String,
}

pub async fn create(
    pool: &PgPool,
    agency: AgencyId,
    owner: UserId,
    new: NewProposal,
    idempotency: Option<IdempotencyKey>,
) -> Result<Committed<ProposalRecord>, ApiError> {
    if let Some(key) = &idempotency
        && let Some(existing) = find_by_idempotency_key(pool, agency, key).await?
    {
        return Ok(Committed::unchanged(existing));
    }
    let mut tx = super::begin(pool).await?;
    ensure_client(&mut tx, agency, new.client_id).await?;
    if let Some(template) = new.template_id {
        ensure_template(&mut tx, agency, template).await?;
    }
    let id = ProposalId::new();
    let amounts: Vec<_> = new.line_items.iter().map(|i| i.amounts).collect();
    let totals = compute_totals(&amounts)?;
    sqlx::query(
        "INSERT INTO proposals (id, agency_id, client_id, owner_id, template_id, title, currency, valid_until, content, \
         terms, subtotal_minor, tax_minor, total_minor) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(id.as_uuid())
    .bind(agency.as_uuid())
    .bind(new.client_id.as_uuid())
    .bind(owner.as_uuid())
    .bind(new.template_id.map(|t| t.as_uuid()))
    .bind(&new.title)
    .bind(&new.currency)
    .bind(new.valid_until)
    .bind(&new.content)
    .bind(&new.terms)
    .bind(totals.subtotal_minor)
    .bind(totals.tax_minor)
    .bind(totals.total_minor)
    .execute(&mut *tx)
    .await?;
    for (position, item) in new.line_items.iter().enumerate() {
        insert_line_item(&mut tx, agency, id, position as i32 + 1, item).await?;
    }
    if let Some(key) = &idempotency {
        let inserted = sqlx::query(
            "INSERT INTO proposal_idempotency_keys (agency_id, key, fingerprint, proposal_id) VALUES ($1, $2, $3, $4)",
        )
        .bind(agency.as_uuid())
        .bind(&key.key)
        .bind(&key.fingerprint)
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // A concurrent retry committed first: ours rolls back and the caller gets theirs.
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                return find_by_idempotency_key(pool, agency, key)
                    .await?
                    .map(Committed::unchanged)
                    .ok_or_else(|| ApiError::FailedPrecondition("idempotency key is being used concurrently".into()));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let record = load(&mut tx, agency, id).await?;
    super::commit(tx, record).await
}

async fn find_by_idempotency_key(
    pool: &PgPool,
    agency: AgencyId,
    key: &IdempotencyKey,
) -> Result<Option<ProposalRecord>, ApiError> {
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT proposal_id, fingerprint FROM proposal_idempotency_keys WHERE agency_id = $1 AND key = $2",
    )
    .bind(agency.as_uuid())
    .bind(&key.key)
    .fetch_optional(pool)
    .await?;
    match row {
        None => Ok(None),
        Some((_, fingerprint)) if fingerprint != key.fingerprint => {
            Err(ApiError::InvalidArgument(vec![tonic_types::FieldViolation::new(
                "idempotency_key",
                "was already used for a different request",
            )]))
        }
        Some((proposal_id, _)) => get(pool, agency, ProposalId::from(proposal_id)).await.map(Some),
    }
}

async fn ensure_client(tx: &mut Transaction<'_, Postgres>, agency: AgencyId, client: ClientId) -> Result<(), ApiError> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM clients WHERE id = $1 AND agency_id = $2")
        .bind(client.as_uuid())
        .bind(agency.as_uuid())
        .fetch_optional(&mut **tx)
        .await?;
    found.map(|_| ()).ok_or_else(|| {
        ApiError::InvalidArgument(vec![tonic_types::FieldViolation::new("client_id", format!("no client {client}"))])
    })
}

async fn ensure_template(
    tx: &mut Transaction<'_, Postgres>,
    agency: AgencyId,
    template: TemplateId,
) -> Result<(), ApiError> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM templates WHERE id = $1 AND agency_id = $2")
        .bind(template.as_uuid())
        .bind(agency.as_uuid())
        .fetch_optional(&mut **tx)
        .await?;
    found.map(|_| ()).ok_or_else(|| {
        ApiError::InvalidArgument(vec![tonic_types::FieldViolation::new(
            "template_id",
            format!("no template {template}"),
        )])
    })
}

async fn insert_line_item(
    tx: &mut Transaction<'_, Postgres>,
    agency: AgencyId,
    proposal: ProposalId,
    position: i32,
    item: &NewLineItem,
) -> Result<LineItemId, ApiError> {
    let id = LineItemId::new();
    let line = item.amounts.amounts()?;
    sqlx::query(
        "INSERT INTO line_items (id, proposal_id, agency_id, position, description, quantity_milli, unit_price_minor, \
         tax_rate_ppm, subtotal_minor, tax_minor) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id.as_uuid())
    .bind(proposal.as_uuid())
    .bind(agency.as_uuid())
    .bind(position)
    .bind(&item.description)
    .bind(item.amounts.quantity_milli())
    .bind(item.amounts.unit_price_minor())
    .bind(item.amounts.tax_rate_ppm())
    .bind(line.subtotal_minor)
    .bind(line.tax_minor)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

pub async fn get(pool: &PgPool, agency: AgencyId, id: ProposalId) -> Result<ProposalRecord, ApiError> {
    load(&mut *pool.acquire().await?, agency, id).await
}

/// Reads a proposal on `conn`, so an edit returns what its own transaction wrote.
pub(crate) async fn load(
    conn: &mut PgConnection,
    agency: AgencyId,
    id: ProposalId,
) -> Result<ProposalRecord, ApiError> {
    let proposal: ProposalRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PROPOSAL_COLUMNS} FROM proposals WHERE id = $1 AND agency_id = $2"
    )))
    .bind(id.as_uuid())
    .bind(agency.as_uuid())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found("proposal", id))?;
    let line_items = sqlx::query_as("SELECT * FROM line_items WHERE proposal_id = $1 ORDER BY position, id")
        .bind(id.as_uuid())
        .fetch_all(&mut *conn)
        .await?;
    Ok(ProposalRecord { proposal, line_items })
}

/// Newest first; returns the page and the id to continue after, if there is more.
pub async fn list(
    pool: &PgPool,
    agency: AgencyId,
    filter: &ProposalFilter,
    after: Option<Uuid>,
    limit: i64,
) -> Result<(Vec<ProposalRecord>, Option<Uuid>), ApiError> {
    let rows: Vec<ProposalRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PROPOSAL_COLUMNS} FROM proposals WHERE agency_id = $1 \
         AND ($2::text IS NULL OR status = $2) AND ($3::uuid IS NULL OR client_id = $3) \
         AND ($4::uuid IS NULL OR owner_id = $4) AND ($5 OR archived_at IS NULL) \
         AND ($6::uuid IS NULL OR id < $6) ORDER BY id DESC LIMIT $7"
    )))
    .bind(agency.as_uuid())
    .bind(filter.status.map(|s| s.as_str()))
    .bind(filter.client_id.map(|c| c.as_uuid()))
    .bind(filter.owner_id.map(|o| o.as_uuid()))
    .bind(filter.include_archived)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let (rows, next) = super::split_page(rows, limit, |r| r.id);
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let items: Vec<LineItemRow> =
        sqlx::query_as("SELECT * FROM line_items WHERE proposal_id = ANY($1) ORDER BY proposal_id, position, id")
            .bind(&ids)
            .fetch_all(pool)
            .await?;
    let mut by_proposal: std::collections::HashMap<Uuid, Vec<LineItemRow>> = std::collections::HashMap::new();
    for item in items {
        by_proposal.entry(item.proposal_id).or_default().push(item);
    }
    let records = rows
        .into_iter()
        .map(|proposal| {
            let line_items = by_proposal.remove(&proposal.id).unwrap_or_default();
            ProposalRecord { proposal, line_items }
        })
        .collect();
    Ok((records, next))
}

/// What an edit requires of the proposal before it may go ahead.
#[derive(Clone, Copy)]
enum EditKind {
    /// Content, prices: only while a draft.
    Content,
    /// Lifecycle moves and archiving: any state the move itself allows.
    Lifecycle,
}

/// Locks the proposal for the rest of `tx` and checks version, archive state and editability.
async fn lock_for_edit(
    tx: &mut Transaction<'_, Postgres>,
    agency: AgencyId,
    id: ProposalId,
    expected_version: Option<i64>,
    kind: EditKind,
) -> Result<ProposalRow, ApiError> {
    let row: ProposalRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PROPOSAL_COLUMNS} FROM proposals WHERE id = $1 AND agency_id = $2 FOR UPDATE"
    )))
    .bind(id.as_uuid())
    .bind(agency.as_uuid())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| ApiError::not_found("proposal", id))?;
    if let Some(expected) = expected_version
        && expected != row.version
    {
        return Err(ApiError::StaleVersion { kind: "proposal", id: id.to_string(), expected, current: row.version });
    }
    if row.archived_at.is_some() {
        return Err(ApiError::FailedPrecondition(format!("proposal {id} is archived")));
    }
    let status = row.status()?;
    if matches!(kind, EditKind::Content) && !status.is_editable() {
        return Err(ApiError::FailedPrecondition(format!(
            "proposal {id} is {status}: only a draft can be edited (withdraw it and move it back to draft first)"
        )));
    }
    Ok(row)
}

/// Recomputes totals from the stored line items and bumps the version, inside `tx`.
async fn finish_edit(tx: &mut Transaction<'_, Postgres>, id: ProposalId) -> Result<(), ApiError> {
    let stored: Vec<(i64, i64, i64)> =
        sqlx::query_as("SELECT quantity_milli, unit_price_minor, tax_rate_ppm FROM line_items WHERE proposal_id = $1")
            .bind(id.as_uuid())
            .fetch_all(&mut **tx)
            .await?;
    let amounts = stored.into_iter().map(|(q, p, t)| LineItemAmounts::parse(q, p, t)).collect::<Result<Vec<_>, _>>()?;
    let totals = compute_totals(&amounts)?;
    sqlx::query(
        "UPDATE proposals SET subtotal_minor = $2, tax_minor = $3, total_minor = $4, version = version + 1, \
         updated_at = now() WHERE id = $1",
    )
    .bind(id.as_uuid())
    .bind(totals.subtotal_minor)
    .bind(totals.tax_minor)
    .bind(totals.total_minor)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn update(
    pool: &PgPool,
    agency: AgencyId,
    id: ProposalId,
    expected_version: i64,
    changes: ProposalChanges,
) -> Result<Committed<ProposalRecord>, ApiError> {
    let mut tx = super::begin(pool).await?;
    let row = lock_for_edit(&mut tx, agency, id, Some(expected_version), EditKind::Content).await?;
    if let Some(currency) = &changes.currency {
        // Amounts are stored in minor units: a currency with another exponent would rescale them.
        let (from, to) = (Currency::parse(row.currency.trim())?, Currency::parse(currency)?);
        let has_items: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM line_items WHERE proposal_id = $1)")
            .bind(id.as_uuid())
            .fetch_one(&mut *tx)
            .await?;
        if from.minor_digits() != to.minor_digits() && has_items {
            return Err(ApiError::FailedPrecondition(format!(
                "cannot change currency from {from} to {to} while line items are priced in {from}'s minor units; \
                 remove the line items first"
            )));
        }
    }
    if let Some(client) = changes.client_id {
        ensure_client(&mut tx, agency, client).await?;
    }
    if let Some(Some(template)) = changes.template_id {
        ensure_template(&mut tx, agency, template).await?;
    }
    sqlx::query(
        "UPDATE proposals SET title = $2, client_id = $3, currency = $4, valid_until = $5, content = $6, terms = $7, \
         template_id = $8 WHERE id = $1",
    )
    .bind(id.as_uuid())
    .bind(changes.title.unwrap_or(row.title))
    .bind(changes.client_id.map(|c| c.as_uuid()).unwrap_or(row.client_id))
    .bind(changes.currency.unwrap_or(row.currency))
    .bind(changes.valid_until.unwrap_or(row.valid_until))
    .bind(changes.content.unwrap_or(row.content))
    .bind(changes.terms.unwrap_or(row.terms))
    .bind(changes.template_id.map(|t| t.map(|t| t.as_uuid())).unwrap_or(row.template_id))
    .execute(&mut *tx)
    .await?;
    finish_edit(&mut tx, id).await?;
    let record = load(&mut tx, agency, id).await?;
    super::commit(tx, record).await
}

/// A lifecycle move without issuing a client link; the API's own is
/// `client_links::transition`, which issues one on a send.
pub async fn transition(
    pool: &PgPool,
    agency: AgencyId,
    id: ProposalId,
    to: ProposalStatus,
    expected_version: Option<i64>,
) -> Result<Committed<ProposalRecord>, ApiError> {
    let mut tx = super::begin(pool).await?;
    transition_in(&mut tx, agency, id, to, expected_version).await?;
    let record = load(&mut tx, agency, id).await?;
    super::commit(tx, record).await
}

/// Locks a proposal for a lifecycle move (archived ones refused) without checking a version.
pub(crate) async fn lock(
    tx: &mut Transaction<'_, Postgres>,
    agency: AgencyId,
    id: ProposalId,
) -> Result<ProposalRow, ApiError> {
    lock_for_edit(tx, agency, id, None, EditKind::Lifecycle).await
}

/// One lifecycle move inside `tx`, by the domain's rules; returns the row as it now is. A
/// withdrawal revokes the client's links.
pub(crate) async fn transition_in(
    tx: &mut Transaction<'_, Postgres>,
    agency: AgencyId,
    id: ProposalId,
    to: ProposalStatus,
    expected_version: Option<i64>,
) -> Result<ProposalRow, ApiError> {
    let row = lock_for_edit(tx, agency, id, expected_version, EditKind::Lifecycle).await?;
    let to = row.status()?.transition(to)?;
    if to == ProposalStatus::Sent {
        let items: i64 = sqlx::query_scalar("SELECT count(*) FROM line_items WHERE proposal_id = $1")
            .bind(id.as_uuid())
            .fetch_one(&mut **tx)
            .await?;
        if items == 0 {
            return Err(ApiError::FailedPrecondition(format!(
                "proposal {id} has no line items: add one before sending"
            )));
        }
    }
    // The column is chosen from a closed set, never from input.
    let stamp = match to {
        ProposalStatus::Draft => "",
        ProposalStatus::Sent => "sent_at = now(),",
        ProposalStatus::Viewed => "viewed_at = now(),",
        ProposalStatus::Accepted => "accepted_at = now(),",
        ProposalStatus::Declined => "declined_at = now(),",
        ProposalStatus::Withdrawn => "withdrawn_at = now(),",
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE proposals SET status = $2, {stamp} version = version + 1, updated_at = now() WHERE id = $1"
    )))
    .bind(id.as_uuid())
    .bind(to.as_str())
    .execute(&mut **tx)
    .await?;
    if to == ProposalStatus::Withdrawn {
        super::client_links::revoke_all(tx, id.as_uuid()).await?;
    }
    let row: ProposalRow =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {PROPOSAL_COLUMNS} FROM proposals WHERE id = $1")))
            .bind(id.as_uuid())
            .fetch_one(&mut **tx)
            .await?;
    Ok(row)
}

/// Archiving hides a proposal from default listings and freezes it; repeating it is a no-op.
pub async fn archive(
    pool: &PgPool,
    agency: AgencyId,
    id: ProposalId,
    expected_version: Option<i64>,
) -> Result<Committed<ProposalRecord>, ApiError> {
    let current = get(pool, agency, id).await?;
    if current.proposal.archived_at.is_some() {
        return Ok(Committed::unchanged(current));
    }
    let mut tx = super::begin(pool).await?;
    lock_for_edit(&mut tx, agency, id, expected_version, EditKind::Lifecycle).await?;
    sqlx::query("UPDATE proposals SET archived_at = now(), version = version + 1, updated_at = now() WHERE id = $1")
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await?;
    super::client_links::revoke_all(&mut tx, id.as_uuid()).await?;
    let record = load(&mut tx, agency, id).await?;
    super::commit(tx, record).await
}

pub async fn add_line_item(
    pool: &PgPool,
    agency: AgencyId,
    id: ProposalId,
    expected_version: Option<i64>,
    item: NewLineItem,
) -> Result<Committed<(ProposalRecord, LineItemId)>, ApiError> {
    let mut tx = super::begin(pool).await?;
    lock_for_edit(&mut tx, agency, id, expected_version, EditKind::Content).await?;
    let position: i32 =
        sqlx::query_scalar("SELECT coalesce(max(position), 0) + 1 FROM line_items WHERE proposal_id = $1")
            .bind(id.as_uuid())
            .fetch_one(&mut *tx)
            .await?;
    let item_id = insert_line_item(&mut tx, agency, id, position, &item).await?;
    finish_edit(&mut tx, id).await?;
    let record = load(&mut tx, agency, id).await?;
    super::commit(tx, (record, item_id)).await
}

pub async fn update_line_item(
    pool: &PgPool,
    agency: AgencyId,
    id: ProposalId,
    item_id: LineItemId,
    expected_version: Option<i64>,
    changes: LineItemChanges,
) -> Result<Committed<ProposalRecord>, ApiError> {
    let mut tx = super::begin(pool).await?;
    lock_for_edit(&mut tx, agency, id, expected_version, EditKind::Content).await?;
    let current: LineItemRow = sqlx::query_as("SELECT * FROM line_items WHERE id = $1 AND proposal_id = $2")
        .bind(item_id.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::not_found("line item", item_id))?;
    let amounts = LineItemAmounts::parse(
        changes.quantity_milli.unwrap_or(current.quantity_milli),
        changes.unit_price_minor.unwrap_or(current.unit_price_minor),
        changes.tax_rate_ppm.unwrap_or(current.tax_rate_ppm),
    )?;
    let line = amounts.amounts()?;
    sqlx::query(
        "UPDATE line_items SET description = $2, quantity_milli = $3, unit_price_minor = $4, tax_rate_ppm = $5, \
         subtotal_minor = $6, tax_minor = $7 WHERE id = $1",
    )
    .bind(item_id.as_uuid())
    .bind(changes.description.unwrap_or(current.description))
    .bind(amounts.quantity_milli())
    .bind(amounts.unit_price_minor())
    .bind(amounts.tax_rate_ppm())
    .bind(line.subtotal_minor)
    .bind(line.tax_minor)
    .execute(&mut *tx)
    .await?;
    finish_edit(&mut tx, id).await?;
    let record = load(&mut tx, agency, id).await?;
    super::commit(tx, record).await
}

pub async fn remove_line_item(
    pool: &PgPool,
    agency: AgencyId,
    id: ProposalId,
    item_id: LineItemId,
    expected_version: Option<i64>,
) -> Result<Committed<ProposalRecord>, ApiError> {
    let mut tx = super::begin(pool).await?;
    lock_for_edit(&mut tx, agency, id, expected_version, EditKind::Content).await?;
    let deleted = sqlx::query("DELETE FROM line_items WHERE id = $1 AND proposal_id = $2")
        .bind(item_id.as_uuid())
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::not_found("line item", item_id));
    }
    finish_edit(&mut tx, id).await?;
    let record = load(&mut tx, agency, id).await?;
    super::commit(tx, record).await
}
