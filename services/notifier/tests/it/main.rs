//! The notifier against real PostgreSQL, NATS JetStream, an SMTP server (aiosmtpd) and a
//! webhook receiver that verifies signatures with the `standardwebhooks` package.

mod admin_api;
mod client_link_email;
mod dead_letters;
mod e2e;
mod exactly_once;
mod helpers;
mod invitations;
mod kills;
mod notification_defaults;
mod preferences;
mod retries;
mod transactions;
mod transitions;
mod webhooks;
