//! [`AccountStore`] on the embedded store: profiles and subscriptions beside
//! the credits in the account's record, changed by the rules of
//! [`ChangeRules`] in one step with the credits they touch.

use meter_core::{
    AccountId, AccountStore, ChangeOutcome, ChangeRules, ChangeSubscription, CreditBalance,
    MeterError, PlannedAllowance, Profile, Recorded, RegisterAccount, RegisterOutcome, StoreError,
    StoredAccount, Timestamp, UpdateProfile,
};

use crate::{
    AccountRecord, MemoryStore,
    credits::{append, caller},
};

/// The idempotency context of subscription calls (`idem:account:` on Redis).
const CONTEXT: &str = "account";

/// The account store on the embedded store.
#[derive(Clone, Debug)]
pub struct MemoryAccounts {
    pub(crate) store: MemoryStore,
}

/// The account's parts as of `now`.
fn stored(record: &AccountRecord, now: Timestamp) -> StoredAccount {
    StoredAccount {
        profile: record.profile.clone(),
        subscription: record.subscription.clone(),
        balance: record
            .credits
            .clone()
            .map_or_else(CreditBalance::default, |mut credits| {
                credits.settle(now, &mut Vec::new());
                credits.balance(now)
            }),
    }
}

impl AccountStore for MemoryAccounts {
    async fn account(
        &self,
        account: &AccountId,
        now: Timestamp,
    ) -> Result<StoredAccount, StoreError> {
        Ok(self.store.read(account, |record| stored(record, now)))
    }

    async fn register(
        &self,
        request: &RegisterAccount,
        now: Timestamp,
    ) -> Result<Recorded<RegisterOutcome>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let caller = caller(idempotency, "");
        let retention = self.store.inner.history_retention;
        let default = request.catalog.default_plan();
        self.store.mutate(
            &request.account,
            CONTEXT,
            idempotency,
            now,
            |record: &mut AccountRecord| {
                if let Some(profile) = &mut record.profile {
                    profile.last_login = now;
                    return Ok(RegisterOutcome {
                        created: false,
                        account: stored(record, now),
                    });
                }
                let mut profile = Profile {
                    email: String::new(),
                    name: String::new(),
                    image: String::new(),
                    role: String::new(),
                    joined: now,
                    last_login: now,
                };
                request.profile.apply(&mut profile);
                record.profile = Some(profile);
                if record.subscription.is_none() {
                    record.subscription = Some(meter_core::Subscription::default_for(default));
                }
                let mut credits = record.credits.take().unwrap_or_default();
                if credits.allowance.schedule.is_none() {
                    let mut log = Vec::new();
                    let start = PlannedAllowance {
                        at: now,
                        total: default.credits,
                        period: default.credit_period,
                    };
                    credits.start_allowance(start, None, now, caller, &mut log);
                    append(&mut record.history, log, now, retention);
                }
                record.credits = Some(credits);
                Ok(RegisterOutcome {
                    created: true,
                    account: stored(record, now),
                })
            },
        )
    }

    async fn change_subscription(
        &self,
        request: &ChangeSubscription,
        now: Timestamp,
    ) -> Result<Recorded<ChangeOutcome>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let caller = caller(idempotency, "");
        let retention = self.store.inner.history_retention;
        let rules = ChangeRules {
            change: &request.change,
            event_time: request.event_time,
            catalog: &request.catalog,
        };
        self.store.mutate(
            &request.account,
            CONTEXT,
            idempotency,
            now,
            |record: &mut AccountRecord| {
                let mut credits = record.credits.clone().unwrap_or_default();
                let mut log = Vec::new();
                let (subscription, applied) = rules.apply(
                    record.subscription.clone(),
                    &mut credits,
                    now,
                    caller,
                    &mut log,
                )?;
                let next_credit_reset = {
                    let mut view = credits.clone();
                    view.settle(now, &mut Vec::new());
                    view.allowance.period_end()
                };
                // An ignored event leaves the record as it was.
                if applied {
                    record.subscription = Some(subscription.clone());
                    record.credits = Some(credits);
                    append(&mut record.history, log, now, retention);
                }
                Ok(ChangeOutcome {
                    subscription,
                    applied,
                    next_credit_reset,
                })
            },
        )
    }

    async fn update_profile(
        &self,
        request: &UpdateProfile,
        now: Timestamp,
    ) -> Result<Recorded<Profile>, MeterError> {
        self.store.mutate(
            &request.account,
            CONTEXT,
            request.idempotency.as_ref(),
            now,
            |record: &mut AccountRecord| {
                let Some(profile) = &mut record.profile else {
                    return Err(MeterError::NotFound(format!(
                        "account {} is not registered; call RegisterAccount first",
                        request.account
                    )));
                };
                request.fields.apply(profile);
                Ok(profile.clone())
            },
        )
    }

    async fn link_customer(
        &self,
        customer: &str,
        account: &AccountId,
        time: Timestamp,
    ) -> Result<(), StoreError> {
        let mut customers = self.store.customers();
        let later = customers
            .get(customer)
            .is_some_and(|(_, linked)| *linked > time);
        if !later {
            customers.insert(customer.to_owned(), (account.clone(), time));
        }
        Ok(())
    }

    async fn find_by_customer(&self, customer: &str) -> Result<Option<AccountId>, StoreError> {
        Ok(self
            .store
            .customers()
            .get(customer)
            .map(|(account, _)| account.clone()))
    }

    async fn delete_account(&self, account: &AccountId) -> Result<bool, StoreError> {
        let mut shard = self.store.shard(account);
        let existed = shard.accounts.remove(account).is_some_and(|record| {
            record.profile.is_some()
                || record.credits.is_some()
                || record.subscription.is_some()
                || record.stats.is_some()
                || record.usage.is_some()
        });
        // The expiry queue's entries of this account's records are skipped
        // when they come up (forget_expired drops only what is there).
        shard.remembered.retain(|(owner, _, _), _| owner != account);
        // Under the account's lock, as recording raises them.
        self.store.rankings().remove(account);
        self.store
            .customers()
            .retain(|_, (owner, _)| owner != account);
        Ok(existed)
    }
}
