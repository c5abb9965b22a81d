//! The operations the group committer decides, and their results: a change of balance
//! ([`crate::ChangeRequest`]) and the hold operations (create, capture, release). The
//! requests themselves are nouns of [`crate::model`].

use crate::{Balance, CaptureRequest, ChangeRequest, CreditHold, CreditTransaction, HoldCaptured, HoldRequest};

/// One operation the committer decides: every change of a balance or a hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A consume, grant, purchase or adjustment.
    Change(ChangeRequest),
    /// A new hold.
    CreateHold(HoldRequest),
    /// Capturing a hold.
    Capture(CaptureRequest),
    /// Releasing a hold.
    Release {
        /// The hold's organization.
        organization_id: String,
        /// `hld_…`
        hold_id: String,
    },
}

impl Op {
    /// The organization whose lock it needs.
    pub fn organization_id(&self) -> &str {
        match self {
            Self::Change(request) => &request.organization_id,
            Self::CreateHold(request) => &request.organization_id,
            Self::Capture(request) => &request.organization_id,
            Self::Release { organization_id, .. } => organization_id,
        }
    }

    /// The idempotency key it carries (consumes, grants and holds share one namespace).
    pub fn idempotency_key(&self) -> Option<&str> {
        match self {
            Self::Change(request) => request.idempotency_key.as_deref(),
            Self::CreateHold(request) => request.idempotency_key.as_deref(),
            Self::Capture(_) | Self::Release { .. } => None,
        }
    }

    /// What its idempotency key, once applied, is recorded on.
    pub fn key_use(&self) -> KeyUse {
        match self {
            Self::CreateHold(_) => KeyUse::Hold,
            Self::Change(_) | Self::Capture(_) | Self::Release { .. } => KeyUse::Transaction,
        }
    }
}

/// What an idempotency key is recorded on: the two kinds of request that share the
/// namespace, each answered as a replay only by its own kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyUse {
    /// A transaction: a consume's, a grant's.
    Transaction,
    /// A hold.
    Hold,
}

/// What an operation came to.
#[derive(Clone, Debug)]
pub enum Done {
    /// The transaction, the balance after it and the lot it formed.
    Changed(CreditTransaction, Balance, Option<String>),
    /// The hold created and the balance after.
    Held(CreditHold, Balance),
    /// The capture.
    Captured(Box<HoldCaptured>),
    /// The hold released (or as it had ended) and the balance after.
    Released(CreditHold, Balance),
}
