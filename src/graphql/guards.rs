//! Field guards: scope rules that belong to a field wherever its object is reached.
//!
//! A resolver at the root checks what the caller may do there ([`super::context::scope`]).
//! Some objects are also reached from a mutation's payload, where that check was for the
//! mutation (a `CONSUME` session's consume), not for reading: the guard on the field
//! decides instead, whichever root it was reached from.

use async_graphql::{Context, Guard};

use super::context::{Access, Caller, caller};
use super::nulls::propagating;

/// On a field that leads out of the object it is on to another object of the
/// organization (its `organization`, an allocation's `lot`, a lot's `source`): following
/// it is reading the organization, scope `READ` for a client session. A `CONSUME`-only
/// session sees the balance and the transaction or hold it changed, with their scalars
/// and allocation amounts, and nothing they lead to: it is `FORBIDDEN` at the field's
/// path (null there, or at the nearest nullable parent), and the change stays committed.
/// Other callers reach these fields only from their own organization's objects.
pub struct LeadsElsewhere;

impl Guard for LeadsElsewhere {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let caller = caller(ctx);
        if matches!(caller, Caller::Session { .. }) {
            // The same rule, and message, as any query a session makes without `READ`.
            caller.scope(None, Access::Read).map_err(|error| propagating(error.into()))?;
        }
        Ok(())
    }
}
