//! Outgoing events: what the ledger tells an application's backend, one per committed
//! change that matters (never one per consumption: usage is read from the history).

/// The kinds of outgoing event, by their wire names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// `available` fell from at least the threshold to below it.
    BalanceLow,
    /// `spendable` fell from above zero to zero or below.
    BalanceDepleted,
    /// `spendable` rose from zero or below to above zero.
    BalanceRecovered,
    /// Credits granted.
    Granted,
    /// A lot's credits expired.
    Expired,
    /// A lot was voided.
    Voided,
    /// A purchase was paid and credited.
    PurchaseCompleted,
    /// A purchase failed.
    PurchaseFailed,
    /// A purchase was refunded, fully or partly.
    PurchaseRefunded,
    /// A purchase's payment was disputed.
    PurchaseDisputed,
    /// A disputed purchase was reinstated.
    PurchaseReinstated,
    /// A hold reached its TTL uncaptured.
    HoldExpired,
    /// An automatic top-up was paid and credited.
    TopupSucceeded,
    /// An automatic top-up failed.
    TopupFailed,
    /// An automatic top-up needs the customer (3-D Secure).
    TopupRequiresAction,
}

impl EventType {
    /// Every type, in catalogue order.
    pub const ALL: [Self; 15] = [
        Self::BalanceLow,
        Self::BalanceDepleted,
        Self::BalanceRecovered,
        Self::Granted,
        Self::Expired,
        Self::Voided,
        Self::PurchaseCompleted,
        Self::PurchaseFailed,
        Self::PurchaseRefunded,
        Self::PurchaseDisputed,
        Self::PurchaseReinstated,
        Self::HoldExpired,
        Self::TopupSucceeded,
        Self::TopupFailed,
        Self::TopupRequiresAction,
    ];

    /// The wire name, e.g. `credits.balance.low`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BalanceLow => "credits.balance.low",
            Self::BalanceDepleted => "credits.balance.depleted",
            Self::BalanceRecovered => "credits.balance.recovered",
            Self::Granted => "credits.granted",
            Self::Expired => "credits.expired",
            Self::Voided => "credits.voided",
            Self::PurchaseCompleted => "credits.purchase.completed",
            Self::PurchaseFailed => "credits.purchase.failed",
            Self::PurchaseRefunded => "credits.purchase.refunded",
            Self::PurchaseDisputed => "credits.purchase.disputed",
            Self::PurchaseReinstated => "credits.purchase.reinstated",
            Self::HoldExpired => "credits.hold.expired",
            Self::TopupSucceeded => "credits.topup.succeeded",
            Self::TopupFailed => "credits.topup.failed",
            Self::TopupRequiresAction => "credits.topup.requires_action",
        }
    }

    /// The type named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Whether it is one of the balance alerts (their body carries the threshold).
    pub fn is_balance_alert(self) -> bool {
        matches!(self, Self::BalanceLow | Self::BalanceDepleted | Self::BalanceRecovered)
    }
}
