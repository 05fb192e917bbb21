use thiserror::Error;

/// Why a where clause was refused. Displayed as Electric words it (`At location N: reason`),
/// which is what goes into `{"errors":{"where":[…]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("At location {location}: {reason}")]
pub struct WhereError {
    /// Electric's location: for syntax errors the 0-based character offset in
    /// `"SELECT 1 WHERE " + where` (its client tests assert this form), for other errors the
    /// 0-based character offset in the where clause itself.
    pub location: usize,
    pub reason: String,
}

/// Length of the `SELECT 1 WHERE ` prefix Electric's syntax-error positions count.
pub(crate) const SYNTAX_PREFIX: usize = 15;

impl WhereError {
    pub(crate) fn at(source: &str, byte_offset: usize, reason: impl Into<String>) -> Self {
        Self { location: char_offset(source, byte_offset), reason: reason.into() }
    }

    pub(crate) fn syntax(source: &str, byte_offset: usize, reason: impl Into<String>) -> Self {
        Self { location: SYNTAX_PREFIX + char_offset(source, byte_offset), reason: reason.into() }
    }
}

fn char_offset(source: &str, byte_offset: usize) -> usize {
    let end = byte_offset.min(source.len());
    source.char_indices().take_while(|(i, _)| *i < end).count()
}

/// A row could not be evaluated: a value was not valid text for its column type, or an
/// operation failed as it would in Postgres (overflowing cast, bad LIKE pattern).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EvalError {
    #[error("row has {got} values but the table has {expected} columns")]
    RowWidth { expected: usize, got: usize },
    #[error("invalid value for column {column}: {reason}")]
    BadColumnValue { column: String, reason: String },
    #[error("{0}")]
    Runtime(String),
    /// The evaluation took more than its budget of steps ([`crate::Limits::eval_steps`]): the
    /// clause is too expensive for this row, and its result is unknown (never guessed).
    #[error("where clause exceeded its evaluation budget of {steps} steps")]
    BudgetExceeded { steps: u64 },
    /// The clause has a subquery and was evaluated without what the subquery yields.
    #[error("the clause has a subquery whose values were not provided")]
    SubqueryValuesMissing,
}
