//! The proposal lifecycle: draft → sent → viewed → accepted | declined, and withdrawal of a
//! proposal that is out with the client. Every transition rule lives here.

use std::{fmt, str::FromStr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProposalStatus {
    Draft,
    Sent,
    Viewed,
    Accepted,
    Declined,
    Withdrawn,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a proposal cannot go from {from} to {to}")]
pub struct IllegalTransition {
    pub from: ProposalStatus,
    pub to: ProposalStatus,
}

impl ProposalStatus {
    pub const ALL: [ProposalStatus; 6] = [
        ProposalStatus::Draft,
        ProposalStatus::Sent,
        ProposalStatus::Viewed,
        ProposalStatus::Accepted,
        ProposalStatus::Declined,
        ProposalStatus::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProposalStatus::Draft => "draft",
            ProposalStatus::Sent => "sent",
            ProposalStatus::Viewed => "viewed",
            ProposalStatus::Accepted => "accepted",
            ProposalStatus::Declined => "declined",
            ProposalStatus::Withdrawn => "withdrawn",
        }
    }

    /// Checks a transition; `Ok` carries the target state.
    pub fn transition(self, to: ProposalStatus) -> Result<ProposalStatus, IllegalTransition> {
        use ProposalStatus::*;
        let legal = matches!(
            (self, to),
            (Draft, Sent)
                | (Sent, Viewed)
                | (Sent | Viewed, Accepted | Declined)
                | (Sent | Viewed, Withdrawn)
                | (Withdrawn, Draft)
        );
        if legal { Ok(to) } else { Err(IllegalTransition { from: self, to }) }
    }

    /// Content and prices may change only while the client has not been sent the proposal.
    pub fn is_editable(self) -> bool {
        self == ProposalStatus::Draft
    }
}

impl fmt::Display for ProposalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown proposal status {0:?}")]
pub struct UnknownStatus(String);

impl FromStr for ProposalStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::ProposalStatus::*;
    use super::*;

    #[test]
    fn lifecycle_allows_only_the_documented_moves() {
        let legal = [
            (Draft, Sent),
            (Sent, Viewed),
            (Sent, Accepted),
            (Sent, Declined),
            (Viewed, Accepted),
            (Viewed, Declined),
            (Sent, Withdrawn),
            (Viewed, Withdrawn),
            (Withdrawn, Draft),
        ];
        for from in ProposalStatus::ALL {
            for to in ProposalStatus::ALL {
                assert_eq!(from.transition(to).is_ok(), legal.contains(&(from, to)), "{from} -> {to}");
            }
        }
        let err = Accepted.transition(Draft).unwrap_err();
        assert_eq!(err.to_string(), "a proposal cannot go from accepted to draft");
    }

    #[test]
    fn names_round_trip() {
        for st in ProposalStatus::ALL {
            assert_eq!(st.as_str().parse::<ProposalStatus>().unwrap(), st);
        }
    }
}
