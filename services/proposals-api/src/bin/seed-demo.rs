//! Seeds a demo agency (users, clients, proposals in every state) and prints a bearer token per
//! user. Safe to run again: an existing demo agency is reused and only the tokens are printed.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use folio_domain::{LineItemAmounts, ProposalStatus, UserId};
use proposals_api::{
    Caller, Role,
    store::{clients, proposals, renditions},
    tenancy,
};

#[derive(Parser)]
#[command(about = "Seed Folio's demo data and print bearer tokens")]
struct Args {
    #[command(flatten)]
    db: folio_db::DbArgs,
    #[command(flatten)]
    jwt: folio_auth::JwtArgs,
    /// Lifetime of the printed tokens.
    #[arg(long, env = "FOLIO_DEMO_TOKEN_TTL", default_value = "30days", value_parser = humantime::parse_duration)]
    token_ttl: Duration,
    /// Also write the users and their tokens as JSON (`[{name, email, role, token, agency,
    /// agency_id}]`) to this file, for the web app's demo sign-in (dev-up.sh, development only).
    #[arg(long, value_name = "PATH")]
    json: Option<std::path::PathBuf>,
}

const AGENCY: &str = "Northwind Studio";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = folio_db::connect(&args.db.database_url, 4).await?;
    folio_db::migrate(&pool).await?;

    let existing: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM agencies WHERE name = $1").bind(AGENCY).fetch_optional(&pool).await?;
    let agency = match existing {
        Some(id) => id.into(),
        None => seed(&pool).await.context("seed demo data")?,
    };
    let users: Vec<(uuid::Uuid, String, String, String)> =
        sqlx::query_as("SELECT id, email, role, name FROM users WHERE agency_id = $1 ORDER BY email")
            .bind(agency.as_uuid())
            .fetch_all(&pool)
            .await?;
    let auth = args.jwt.authenticator();
    println!("agency {AGENCY}: {agency}");
    let mut listed = Vec::new();
    for (id, email, role, name) in users {
        let caller =
            Caller { user_id: UserId::from(id), agency_id: agency, role: Role::parse(&role).unwrap_or(Role::Viewer) };
        let token = auth.issue(&caller, args.token_ttl);
        println!("{role:<7} {email:<28} {token}");
        listed.push(serde_json::json!({
            "name": name, "email": email, "role": role, "token": token,
            "agency": AGENCY, "agency_id": agency.to_string(),
        }));
    }
    if let Some(path) = &args.json {
        let body = serde_json::to_vec_pretty(&listed)?;
        std::fs::write(path, body).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

async fn seed(pool: &sqlx::PgPool) -> anyhow::Result<folio_domain::AgencyId> {
    let agency = tenancy::create_agency(pool, AGENCY, "#0b6e4f").await?;
    let owner = tenancy::create_user(pool, agency, "maria@northwind.example", "María Álvarez", Role::Admin).await?;
    tenancy::create_user(pool, agency, "sam@northwind.example", "Sam Okafor", Role::Editor).await?;
    tenancy::create_user(pool, agency, "lee@northwind.example", "Lee Chen", Role::Viewer).await?;

    let client = |name: &str, email: &str, company: &str| clients::ClientFields {
        name: name.into(),
        email: email.into(),
        company: company.into(),
    };
    let acme = clients::create(pool, agency, client("Jordan Reyes", "jordan@acme.example", "Acme Robotics")).await?;
    let blue = clients::create(pool, agency, client("Priya Nair", "priya@bluebird.example", "Bluebird Café")).await?;
    let orbit = clients::create(pool, agency, client("Tomás Novak", "tomas@orbit.example", "Orbit Logistics")).await?;

    let line = |d: &str, q: i64, p: i64, t: i64| proposals::NewLineItem {
        description: d.into(),
        amounts: LineItemAmounts::parse(q, p, t).expect("valid demo amounts"),
    };
    let demo = [
        (
            acme.id,
            "Brand refresh and website",
            "EUR",
            vec![
                line("Discovery workshop (2 days)", 2_000, 180_000, 190_000),
                line("Visual identity", 1_000, 650_000, 190_000),
                line("Website design and build", 1_000, 1_250_000, 190_000),
                line("Hosting, 12 months", 12_000, 4_900, 190_000),
            ],
            ProposalStatus::Draft,
        ),
        (
            blue.id,
            "Menu photography",
            "GBP",
            vec![
                line("Photo session (half day)", 1_000, 95_000, 200_000),
                line("Retouched photos", 40_000, 1_500, 200_000),
            ],
            ProposalStatus::Sent,
        ),
        (
            orbit.id,
            "Fleet dashboard MVP",
            "USD",
            vec![
                line("Product design sprint", 1_000, 1_200_000, 0),
                line("Engineering, hours", 160_000, 14_500, 0),
                line("Launch support", 1_000, 300_000, 0),
            ],
            ProposalStatus::Accepted,
        ),
        (
            acme.id,
            "Trade fair booth graphics",
            "EUR",
            vec![line("Booth graphics", 1_000, 420_000, 190_000)],
            ProposalStatus::Declined,
        ),
    ];
    for (client_id, title, currency, items, target) in demo {
        let new = proposals::NewProposal {
            client_id: client_id.into(),
            template_id: None,
            title: title.into(),
            currency: currency.into(),
            valid_until: Some(time::macros::date!(2027 - 03 - 31)),
            content: format!(
                "Thank you for considering Northwind Studio. This proposal covers {}.",
                title.to_lowercase()
            ),
            terms: "50 % on acceptance, 50 % on delivery. Payment within 30 days of invoice.".into(),
            line_items: items,
        };
        let p = proposals::create(pool, agency, owner, new, None).await?;
        let id = folio_domain::ProposalId::from(p.proposal.id);
        let path: &[ProposalStatus] = match target {
            ProposalStatus::Draft => &[],
            ProposalStatus::Sent => &[ProposalStatus::Sent],
            ProposalStatus::Accepted => &[ProposalStatus::Sent, ProposalStatus::Viewed, ProposalStatus::Accepted],
            _ => &[ProposalStatus::Sent, ProposalStatus::Declined],
        };
        for to in path {
            proposals::transition(pool, agency, id, *to, None).await?;
        }
        // Through the WAL to pdf-render, as RequestPdf does.
        renditions::request(pool, agency, owner, id, String::new(), renditions::DEFAULT_REQUEUE_AFTER).await?;
    }
    Ok(agency)
}
