//! Pure domain types shared by every Folio service. Nothing here does I/O.

pub mod error_code;
pub mod file_names;
pub mod ids;
pub mod lsn;
pub mod money;
pub mod notifications;
pub mod status;

pub use error_code::ErrorCode;
pub use ids::{AgencyId, ClientId, IdParseError, LineItemId, ProposalId, TemplateId, UserId};
pub use lsn::Lsn;
pub use money::{Currency, LineAmounts, LineItemAmounts, MoneyError, Totals, compute_totals};
pub use status::{IllegalTransition, ProposalStatus};
