//! An organization: a tenant that holds credits.

use chrono::{DateTime, Utc};
use entity::organization;

/// A tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organization {
    /// `org_…`
    pub id: String,
    /// Display name.
    pub name: String,
    /// Default threshold for low-balance warnings.
    pub low_balance_threshold: Option<i64>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl From<organization::Model> for Organization {
    fn from(row: organization::Model) -> Self {
        Self {
            id: row.id,
            name: row.name,
            low_balance_threshold: row.low_balance_threshold,
            created_at: row.created_at,
        }
    }
}
