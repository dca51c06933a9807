//! The subscription context: accounts as a whole. Today it holds the plan
//! catalog's use case and the deletion of an account; profiles and
//! subscriptions follow.

use std::{future::Future, sync::Arc};

use crate::{AccountId, PlanCatalog, StoreError};

/// What the subscription context needs from a store.
pub trait AccountStore: Clone + Send + Sync + 'static {
    /// Removes every record of the account, in every context (credits,
    /// grants, holds, history, idempotency records), in one atomic step.
    /// `Ok(true)` when the account had credits; deleting twice is fine.
    fn delete_account(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// The subscription use cases.
#[derive(Debug)]
pub struct Subscriptions<S> {
    store: S,
    catalog: Arc<PlanCatalog>,
}

impl<S: AccountStore> Subscriptions<S> {
    /// Subscriptions over `store`, with plans from `catalog`.
    pub fn new(store: S, catalog: Arc<PlanCatalog>) -> Self {
        Self { store, catalog }
    }

    /// The plan catalog.
    pub fn catalog(&self) -> &PlanCatalog {
        &self.catalog
    }

    /// Removes every record of the account; `true` when it had credits.
    pub async fn delete_account(&self, account: &AccountId) -> Result<bool, StoreError> {
        self.store.delete_account(account).await
    }
}
