//! Issue 13, finding 2: every service started silently with the built-in JWT secret, which is
//! public, and accepted tokens signed with it; the notifier's built-in unsubscribe secret let
//! anyone forge an opt-out for a user of another agency. Outside `FOLIO_ENV=development` each
//! service now refuses to start with a built-in secret or a short one, naming the variable —
//! before it binds a port or connects anything.

use clap::Parser;
use folio_runtime::Environment;

/// Each service's configuration with every default, as in production: flags only, so the test
/// process's own `FOLIO_…` variables cannot hide a default.
fn defaults<C: Parser>(name: &str) -> C {
    C::try_parse_from([name]).expect("the defaults parse")
}

fn assert_refused(what: &str, error: impl std::error::Error, variable: &str, why: &str) {
    let message = folio_runtime::error_chain(&error);
    assert!(
        message.contains(variable) && message.contains(why),
        "{what} should refuse {variable} ({why}), said: {message}"
    );
}

const STRONG: &str = "a-deployments-own-secret-of-at-least-32-bytes";

#[tokio::test]
async fn a_service_given_the_public_development_jwt_secret_refuses_to_start_outside_development() {
    let mut api: proposals_api::Config = defaults("proposals-api");
    api.common.environment = Environment::Production;
    let Err(e) = proposals_api::bind(api).await else { panic!("proposals-api started with the built-in secret") };
    assert_refused("proposals-api", e, "FOLIO_JWT_SECRET", "built-in development secret");

    let mut edge: shape_edge::Config = defaults("shape-edge");
    edge.common.environment = Environment::Production;
    let Err(e) = shape_edge::bind(edge).await else { panic!("shape-edge started with the built-in secret") };
    assert_refused("shape-edge", e, "FOLIO_JWT_SECRET", "built-in development secret");

    let mut notify: notifier::Config = defaults("notifier");
    notify.common.environment = Environment::Production;
    let Err(e) = notifier::bind(notify).await else { panic!("notifier started with the built-in secret") };
    assert_refused("notifier", e, "FOLIO_JWT_SECRET", "built-in development secret");
}

#[tokio::test]
async fn a_notifier_given_the_public_unsubscribe_secret_refuses_to_start_so_opt_outs_cannot_be_forged() {
    let mut notify: notifier::Config = defaults("notifier");
    notify.common.environment = Environment::Production;
    notify.jwt.jwt_secret = STRONG.into();
    let Err(e) = notifier::bind(notify).await else { panic!("notifier started with the built-in unsubscribe secret") };
    assert_refused("notifier", e, "FOLIO_UNSUBSCRIBE_SECRET", "built-in development secret");
}

#[tokio::test]
async fn a_short_secret_is_refused_in_every_environment() {
    for environment in [Environment::Production, Environment::Development] {
        let mut api: proposals_api::Config = defaults("proposals-api");
        api.common.environment = environment;
        api.jwt.jwt_secret = "short".into();
        let Err(e) = proposals_api::bind(api).await else { panic!("proposals-api started with a 5-byte secret") };
        assert_refused("proposals-api", e, "FOLIO_JWT_SECRET", "at least 32");
    }
}

#[tokio::test]
async fn an_edge_outside_development_needs_a_public_url_so_links_never_follow_the_host_header() {
    let mut edge: shape_edge::Config = defaults("shape-edge");
    edge.common.environment = Environment::Production;
    edge.streams.jwt.jwt_secret = STRONG.into();
    let Err(e) = shape_edge::bind(edge.clone()).await else { panic!("shape-edge started without a public URL") };
    assert_refused("shape-edge", e, "FOLIO_EDGE_PUBLIC_URL", "must be set outside development");

    edge.streams.public_url = Some("edge.example.com".into());
    let Err(e) = shape_edge::bind(edge).await else { panic!("shape-edge started with a relative public URL") };
    assert_refused("shape-edge", e, "FOLIO_EDGE_PUBLIC_URL", "not an absolute http(s) URL");
}

/// Issue 20: the secret client links derive from. With the public one, anyone could compute the
/// token of a link from its id (ids travel in change events and delivery rows).
#[tokio::test]
async fn the_api_and_the_notifier_refuse_the_public_client_link_secret() {
    let mut api: proposals_api::Config = defaults("proposals-api");
    api.common.environment = Environment::Production;
    api.jwt.jwt_secret = STRONG.into();
    let Err(e) = proposals_api::bind(api).await else { panic!("proposals-api started with the built-in link secret") };
    assert_refused("proposals-api", e, "FOLIO_CLIENT_LINK_SECRET", "built-in development secret");

    let mut notify: notifier::Config = defaults("notifier");
    notify.common.environment = Environment::Production;
    notify.jwt.jwt_secret = STRONG.into();
    notify.unsubscribe_secret = STRONG.into();
    let Err(e) = notifier::bind(notify).await else { panic!("notifier started with the built-in link secret") };
    assert_refused("notifier", e, "FOLIO_CLIENT_LINK_SECRET", "built-in development secret");
}
