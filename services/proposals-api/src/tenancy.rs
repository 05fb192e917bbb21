//! Agencies and their users. There is no public RPC for them yet (sign-up is outside Folio's
//! scope); operators, the demo seeder and tests create them here.

use folio_domain::{AgencyId, UserId};
use sqlx::PgPool;

use crate::auth::Role;

pub async fn create_agency(pool: &PgPool, name: &str, brand_color: &str) -> Result<AgencyId, sqlx::Error> {
    let id = AgencyId::new();
    sqlx::query("INSERT INTO agencies (id, name, brand_color) VALUES ($1, $2, $3)")
        .bind(id.as_uuid())
        .bind(name)
        .bind(brand_color)
        .execute(pool)
        .await?;
    Ok(id)
}

pub async fn create_user(
    pool: &PgPool,
    agency: AgencyId,
    email: &str,
    name: &str,
    role: Role,
) -> Result<UserId, sqlx::Error> {
    let id = UserId::new();
    sqlx::query("INSERT INTO users (id, agency_id, email, name, role) VALUES ($1, $2, $3, $4, $5)")
        .bind(id.as_uuid())
        .bind(agency.as_uuid())
        .bind(email)
        .bind(name)
        .bind(role.as_str())
        .execute(pool)
        .await?;
    Ok(id)
}
