//! What both test binaries build an edge's Yjs route from.

use clap::Parser;
use folio_durable_streams::StreamsConfig;
use folio_yjs::YjsConfig;
use yrs::Doc;

/// The edge's Durable Streams, Yjs and NATS flags, parsed as the service parses them.
#[derive(Parser)]
pub struct Args {
    #[command(flatten)]
    pub streams: StreamsConfig,
    #[command(flatten)]
    pub yjs: YjsConfig,
    #[command(flatten)]
    pub bus: folio_bus::BusArgs,
}

/// The document's text, as the editor binds it.
pub fn text(doc: &Doc) -> String {
    folio_yjs::compact::text(doc, folio_yjs::proposal::CONTENT_TEXT)
}
