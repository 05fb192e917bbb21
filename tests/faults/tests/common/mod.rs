//! What the kill tests start from: an agency with one member and one client, written through the
//! API's own store.

use folio_domain::{AgencyId, UserId};
use proposals_api::{Role, store, tenancy};

pub struct Studio {
    pub agency: AgencyId,
    pub member: UserId,
    pub client: store::clients::ClientRow,
}

pub async fn studio(pool: &sqlx::PgPool, role: Role) -> Studio {
    let agency = tenancy::create_agency(pool, "Fault Studio", "#0b6e4f").await.unwrap();
    let member = tenancy::create_user(pool, agency, "member@fault.example", "Mo Member", role).await.unwrap();
    let client = store::clients::create(
        pool,
        agency,
        store::clients::ClientFields {
            name: "Cy Client".into(),
            email: "cy@client.example".into(),
            company: "Cyco".into(),
        },
    )
    .await
    .unwrap()
    .value;
    Studio { agency, member, client }
}
