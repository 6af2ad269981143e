//! Driver errors → [`StoreError`]: which failures mean "the database can't be reached right
//! now" (a retry may work, `Unavailable`) and which are a failed statement (`Other`).

use std::fmt::Display;

use scylla::errors::{
    BadQuery, ConnectionPoolError, DbError, ExecutionError, MetadataError, NewSessionError,
    NextPageError, NextRowError, PagerExecutionError, PrepareError, RequestAttemptError,
    RequestError, SchemaAgreementError,
};

use crate::store::StoreError;

/// Whether a driver error means "the database can't be reached right now" (a retry may
/// work) rather than a failed statement.
pub(super) trait Reachability {
    fn unreachable(&self) -> bool;
}

pub(super) fn fault<E: Reachability + Display>(doing: &str, e: E) -> StoreError {
    let message = format!("Cassandra: {doing}: {e}");
    if e.unreachable() {
        StoreError::Unavailable(message)
    } else {
        StoreError::Other(message)
    }
}

impl Reachability for DbError {
    fn unreachable(&self) -> bool {
        matches!(
            self,
            DbError::Unavailable { .. }
                | DbError::Overloaded
                | DbError::IsBootstrapping
                | DbError::ReadTimeout { .. }
                | DbError::WriteTimeout { .. }
                | DbError::TruncateError
                | DbError::RateLimitReached { .. }
        )
    }
}

impl Reachability for RequestAttemptError {
    fn unreachable(&self) -> bool {
        match self {
            RequestAttemptError::DbError(db, _) => db.unreachable(),
            RequestAttemptError::BrokenConnectionError(_)
            | RequestAttemptError::UnableToAllocStreamId => true,
            _ => false,
        }
    }
}

impl Reachability for ConnectionPoolError {
    fn unreachable(&self) -> bool {
        // A broken or initializing pool, or a node filtered away: no node to talk to.
        true
    }
}

impl Reachability for PrepareError {
    fn unreachable(&self) -> bool {
        match self {
            PrepareError::ConnectionPoolError(_) => true,
            PrepareError::AllAttemptsFailed { first_attempt } => first_attempt.unreachable(),
            _ => false,
        }
    }
}

impl Reachability for SchemaAgreementError {
    fn unreachable(&self) -> bool {
        match self {
            SchemaAgreementError::ConnectionPoolError(_) | SchemaAgreementError::Timeout(_) => true,
            SchemaAgreementError::PrepareError(e) => e.unreachable(),
            SchemaAgreementError::RequestError(e) => e.unreachable(),
            _ => false,
        }
    }
}

impl Reachability for MetadataError {
    fn unreachable(&self) -> bool {
        matches!(
            self,
            MetadataError::ConnectionPoolError(_) | MetadataError::FetchError(_)
        )
    }
}

impl Reachability for ExecutionError {
    fn unreachable(&self) -> bool {
        match self {
            ExecutionError::EmptyPlan
            | ExecutionError::ConnectionPoolError(_)
            | ExecutionError::RequestTimeout(_) => true,
            ExecutionError::LastAttemptError(e) => e.unreachable(),
            ExecutionError::PrepareError(e) => e.unreachable(),
            ExecutionError::SchemaAgreementError(e) => e.unreachable(),
            ExecutionError::MetadataError(e) => e.unreachable(),
            ExecutionError::BadQuery(BadQuery::SerializationError(_)) => false,
            _ => false,
        }
    }
}

impl Reachability for RequestError {
    fn unreachable(&self) -> bool {
        match self {
            RequestError::EmptyPlan
            | RequestError::ConnectionPoolError(_)
            | RequestError::RequestTimeout(_) => true,
            RequestError::LastAttemptError(e) => e.unreachable(),
            _ => false,
        }
    }
}

impl Reachability for PagerExecutionError {
    fn unreachable(&self) -> bool {
        match self {
            PagerExecutionError::PrepareError(e) => e.unreachable(),
            PagerExecutionError::NextPageError(e) => e.unreachable(),
            PagerExecutionError::SchemaAgreementError(e) => e.unreachable(),
            PagerExecutionError::MetadataError(e) => e.unreachable(),
            _ => false,
        }
    }
}

impl Reachability for NextPageError {
    fn unreachable(&self) -> bool {
        match self {
            NextPageError::RequestFailure(e) => e.unreachable(),
            _ => false,
        }
    }
}

impl Reachability for NextRowError {
    fn unreachable(&self) -> bool {
        match self {
            NextRowError::NextPageError(e) => e.unreachable(),
            _ => false,
        }
    }
}

impl Reachability for NewSessionError {
    fn unreachable(&self) -> bool {
        // Failing to reach, resolve or log in to any contact point is retried on demand
        // (the node may be starting, or DNS may come back); a bad configuration is not.
        !matches!(
            self,
            NewSessionError::EmptyKnownNodesList | NewSessionError::IllegalConfig(_)
        )
    }
}

/// A conditional write whose outcome is unknown: Paxos timed out or lost to contention, or
/// the coordinator's connection broke (a node lost mid-request: the driver does not resend
/// a conditional write, whose first attempt may have been applied).
pub(super) fn is_cas_uncertain(e: &ExecutionError) -> bool {
    use scylla::errors::WriteType;
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::BrokenConnectionError(_)) => true,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
            db,
            DbError::WriteTimeout {
                write_type: WriteType::Cas,
                ..
            } | DbError::ReadTimeout { .. }
        ),
        ExecutionError::RequestTimeout(_) => true,
        _ => false,
    }
}

/// The error text of a statement failure, for the few server messages matched by text.
pub(super) fn error_text(e: &StoreError) -> &str {
    e.message()
}
