//! Client sessions: short-lived, scoped tokens that an application's backend mints for
//! its signed-in user, so that a browser never holds the organization's secret API key.
//!
//! Like API keys, a token has 256 random bits and is stored only as its SHA-256 hash.
//! A session dies three ways: it expires (checked at every authentication), it is
//! revoked, or the API key that minted it is revoked (see [`Ledger::revoke_api_key`]).
//! Revocation sends the same hint as a key's, naming the session id, so open WebSockets
//! of that session close at once on every replica.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use entity::{api_key, client_session};
use sea_orm::sea_query::{Condition, Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
};

use super::api_keys::{hash_secret, new_secret};
use super::outbox::Outbox;
use super::{AuditAction, Ledger, LedgerError, new_id};

/// What every client session token starts with.
pub const CLIENT_SESSION_TOKEN_PREFIX: &str = "cst_";
/// The lifetime of a session when none is asked for.
pub const DEFAULT_SESSION_TTL_SECS: i64 = 3_600;
/// The longest lifetime a session may have: a day.
pub const MAX_SESSION_TTL_SECS: i64 = 86_400;

/// What a client session may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientScope {
    /// Every query and subscription of its organization.
    Read,
    /// `purchasePackage`.
    Purchase,
    /// `consumeCredits` (and holds).
    Consume,
}

impl ClientScope {
    /// The stored (and GraphQL) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "READ",
            Self::Purchase => "PURCHASE",
            Self::Consume => "CONSUME",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "READ" => Some(Self::Read),
            "PURCHASE" => Some(Self::Purchase),
            "CONSUME" => Some(Self::Consume),
            _ => None,
        }
    }
}

impl fmt::Display for ClientScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scopes of a session: a non-empty set, parsed once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientScopes(BTreeSet<ClientScope>);

impl ClientScopes {
    /// `[READ, PURCHASE]`: what a storefront page needs.
    pub fn default_set() -> Self {
        Self(BTreeSet::from([ClientScope::Read, ClientScope::Purchase]))
    }

    /// Accepts any non-empty list (duplicates collapse).
    pub fn parse(scopes: impl IntoIterator<Item = ClientScope>) -> Result<Self, LedgerError> {
        let set: BTreeSet<ClientScope> = scopes.into_iter().collect();
        if set.is_empty() {
            return Err(LedgerError::InvalidInput("scopes must name at least one scope".into()));
        }
        Ok(Self(set))
    }

    /// Whether `scope` is among them.
    pub fn allows(&self, scope: ClientScope) -> bool {
        self.0.contains(&scope)
    }

    /// In a fixed order: READ, PURCHASE, CONSUME.
    pub fn iter(&self) -> impl Iterator<Item = ClientScope> + '_ {
        self.0.iter().copied()
    }

    fn encode(&self) -> String {
        self.iter().map(ClientScope::as_str).collect::<Vec<_>>().join(",")
    }

    fn decode(stored: &str) -> Self {
        // Unknown names (a newer server's scopes) grant nothing here.
        Self(stored.split(',').filter_map(ClientScope::parse).collect())
    }
}

/// A session's lifetime: 1 ..= [`MAX_SESSION_TTL_SECS`] seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTtl(i64);

impl SessionTtl {
    /// [`DEFAULT_SESSION_TTL_SECS`] when not given.
    pub fn parse(seconds: Option<i64>) -> Result<Self, LedgerError> {
        match seconds.unwrap_or(DEFAULT_SESSION_TTL_SECS) {
            seconds @ 1..=MAX_SESSION_TTL_SECS => Ok(Self(seconds)),
            other => Err(LedgerError::InvalidInput(format!(
                "ttlSeconds must be between 1 and {MAX_SESSION_TTL_SECS}, got {other}"
            ))),
        }
    }
}

/// A client session's public description (never its token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSession {
    /// `cses_…`
    pub id: String,
    /// The organization it acts for.
    pub organization_id: String,
    /// The API key that minted it (none for the admin token).
    pub created_by_key_id: Option<String>,
    /// What it may do.
    pub scopes: ClientScopes,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Revocation time.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ClientSession {
    /// Whether the session authenticates requests at `at`.
    pub fn is_live(&self, at: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && at < self.expires_at
    }
}

impl From<client_session::Model> for ClientSession {
    fn from(row: client_session::Model) -> Self {
        Self {
            id: row.id,
            organization_id: row.organization_id,
            created_by_key_id: row.created_by_key_id,
            scopes: ClientScopes::decode(&row.scopes),
            expires_at: row.expires_at,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        }
    }
}

impl Ledger {
    /// Mints a session for the organization; returns it with its token, which is not stored.
    #[tracing::instrument(skip(self))]
    pub async fn create_client_session(
        &self,
        organization_id: &str,
        scopes: ClientScopes,
        ttl: SessionTtl,
        created_by_key_id: Option<&str>,
    ) -> Result<(ClientSession, String), LedgerError> {
        if self.organization(organization_id).await?.is_none() {
            return Err(LedgerError::OrganizationNotFound);
        }
        let token = new_secret(CLIENT_SESSION_TOKEN_PREFIX)?;
        let created_at = self.now();
        let txn = self.begin_write().await?;
        let row = client_session::ActiveModel {
            id: Set(new_id("cses")),
            organization_id: Set(organization_id.to_owned()),
            created_by_key_id: Set(created_by_key_id.map(str::to_owned)),
            token_hash: Set(hash_secret(&token)),
            scopes: Set(scopes.encode()),
            expires_at: Set(created_at + Duration::seconds(ttl.0)),
            created_at: Set(created_at),
            revoked_at: Set(None),
        }
        .insert(&txn)
        .await?;
        let mut outbox = Outbox::default();
        let details = serde_json::json!({ "scopes": row.scopes, "expiresAt": row.expires_at, "createdByKeyId": row.created_by_key_id });
        let organization = Some(organization_id);
        self.audit_into(&mut outbox, organization, AuditAction::CreateClientSession, Some(&row.id), details);
        outbox.commit(txn, &self.events).await?;
        Ok((ClientSession::from(row), token))
    }

    /// Revokes a session (idempotent) and hints every replica's WebSockets of it to
    /// re-check it, as for an API key.
    #[tracing::instrument(skip(self))]
    pub async fn revoke_client_session(&self, id: &str) -> Result<ClientSession, LedgerError> {
        let txn = self.begin_write().await?;
        client_session::Entity::update_many()
            .col_expr(client_session::Column::RevokedAt, Some(self.now()).into())
            .filter(client_session::Column::Id.eq(id))
            .filter(client_session::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        let Some(session) = client_session::Entity::find_by_id(id.to_owned()).one(&txn).await?.map(ClientSession::from)
        else {
            txn.rollback().await?;
            return Err(LedgerError::ClientSessionNotFound);
        };
        let mut outbox = Outbox::default();
        outbox.revoked(session.id.clone());
        let details = serde_json::json!({ "revokedAt": session.revoked_at });
        let organization = Some(session.organization_id.as_str());
        self.audit_into(&mut outbox, organization, AuditAction::RevokeClientSession, Some(&session.id), details);
        outbox.commit(txn, &self.events).await?;
        Ok(session)
    }

    /// Revokes every live session minted by API key `key_id`, inside the caller's
    /// transaction (the key's revocation), their revocations in its outbox.
    pub(super) async fn revoke_sessions_of_key<C: ConnectionTrait>(
        conn: &C,
        key_id: &str,
        at: DateTime<Utc>,
        outbox: &mut Outbox,
    ) -> Result<(), LedgerError> {
        let ids: Vec<String> = client_session::Entity::find()
            .select_only()
            .column(client_session::Column::Id)
            .filter(client_session::Column::CreatedByKeyId.eq(key_id))
            .filter(client_session::Column::RevokedAt.is_null())
            .into_tuple()
            .all(conn)
            .await?;
        if ids.is_empty() {
            return Ok(());
        }
        client_session::Entity::update_many()
            .col_expr(client_session::Column::RevokedAt, Some(at).into())
            .filter(client_session::Column::CreatedByKeyId.eq(key_id))
            .filter(client_session::Column::RevokedAt.is_null())
            .exec(conn)
            .await?;
        for id in ids {
            outbox.revoked(id);
        }
        Ok(())
    }

    /// Ids of the sessions revoked at or after `since` (for hinting revocations that
    /// another process committed).
    pub async fn client_sessions_revoked_since(&self, since: DateTime<Utc>) -> Result<Vec<String>, LedgerError> {
        Ok(client_session::Entity::find()
            .select_only()
            .column(client_session::Column::Id)
            .filter(client_session::Column::RevokedAt.gte(since))
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// A session by id.
    pub async fn client_session(&self, id: &str) -> Result<Option<ClientSession>, LedgerError> {
        Ok(client_session::Entity::find_by_id(id.to_owned()).one(&self.db).await?.map(ClientSession::from))
    }

    /// The live session whose token this is: unrevoked, unexpired, and minted by a key
    /// that is itself unrevoked.
    pub async fn authenticate_client_session(&self, token: &str) -> Result<Option<ClientSession>, LedgerError> {
        if !token.starts_with(CLIENT_SESSION_TOKEN_PREFIX) {
            return Ok(None);
        }
        Ok(live_sessions(self.now())
            .filter(client_session::Column::TokenHash.eq(hash_secret(token)))
            .one(&self.db)
            .await?
            .map(ClientSession::from))
    }

    /// Whether session `id` still authenticates (as [`Self::authenticate_client_session`]
    /// would answer for its token): for open WebSockets.
    pub async fn client_session_is_live(&self, id: &str) -> Result<bool, LedgerError> {
        Ok(live_sessions(self.now()).filter(client_session::Column::Id.eq(id)).one(&self.db).await?.is_some())
    }
}

/// Sessions that authenticate now. The minting key is checked in the same statement:
/// revoking a key revokes its sessions in the revoking transaction, but a session whose
/// insert raced that transaction (its key checked just before, its row committed just
/// after) escapes that update, so no session outlives its key's revocation only if
/// every authentication also asks whether the key still stands.
fn live_sessions(at: DateTime<Utc>) -> sea_orm::Select<client_session::Entity> {
    // Correlated, so each session finds its key by the primary key (an `IN` list of
    // every unrevoked key would be read whole for each authentication).
    let key_stands = Query::select()
        .expr(Expr::val(1))
        .from(api_key::Entity)
        .and_where(
            Expr::col((api_key::Entity, api_key::Column::Id))
                .equals((client_session::Entity, client_session::Column::CreatedByKeyId)),
        )
        .and_where(Expr::col((api_key::Entity, api_key::Column::RevokedAt)).is_null())
        .to_owned();
    client_session::Entity::find()
        .filter(client_session::Column::RevokedAt.is_null())
        .filter(client_session::Column::ExpiresAt.gt(at))
        .filter(Condition::any().add(client_session::Column::CreatedByKeyId.is_null()).add(Expr::exists(key_stands)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_defaults_to_an_hour_and_is_bounded_by_a_day() {
        assert_eq!(SessionTtl::parse(None).unwrap(), SessionTtl(3_600));
        assert_eq!(SessionTtl::parse(Some(86_400)).unwrap(), SessionTtl(86_400));
        assert!(SessionTtl::parse(Some(86_401)).is_err());
        assert!(SessionTtl::parse(Some(0)).is_err());
        assert!(SessionTtl::parse(Some(-5)).is_err());
    }

    #[test]
    fn scopes_round_trip_and_must_not_be_empty() {
        let scopes = ClientScopes::parse([ClientScope::Consume, ClientScope::Read, ClientScope::Read]).unwrap();
        assert_eq!(scopes.encode(), "READ,CONSUME");
        assert_eq!(ClientScopes::decode("READ,CONSUME"), scopes);
        assert!(ClientScopes::parse([]).is_err());
        assert!(ClientScopes::decode("ADMIN").iter().next().is_none());
    }
}
