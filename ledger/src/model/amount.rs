//! An amount of credits.

use crate::LedgerError;

/// The largest balance or amount: 2^53 − 1, the largest integer every JSON client holds exactly.
pub const MAX_CREDITS: i64 = 9_007_199_254_740_991;

/// A strictly positive number of credits, at most [`MAX_CREDITS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amount(i64);

impl Amount {
    /// Accepts 1 ..= [`MAX_CREDITS`].
    pub fn parse(value: i64) -> Result<Self, LedgerError> {
        if (1..=MAX_CREDITS).contains(&value) {
            Ok(Self(value))
        } else {
            Err(LedgerError::InvalidInput(format!("amount must be between 1 and {MAX_CREDITS}, got {value}")))
        }
    }

    /// The number of credits.
    pub fn get(self) -> i64 {
        self.0
    }
}
