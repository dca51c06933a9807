//! The subscription context: accounts as a whole. Registration and
//! profiles, the subscription billing events describe, the credit allowance
//! a plan gives, and deleting an account with everything it has.

mod commands;
mod profile;
mod record;
mod store;

use std::{sync::Arc, time::Duration};

pub use commands::{
    AccountView, ChangeSubscription, RegisterAccount, RegisterOutcome, StoredAccount, UpdateProfile,
};
pub use profile::{
    MAX_EMAIL_CHARS, MAX_IMAGE_CHARS, MAX_NAME_CHARS, MAX_ROLE_CHARS, Prefix, Profile,
    ProfileFields,
};
pub use record::{
    ChangeOutcome, ChangeRules, PlanAllowance, Subscription, SubscriptionChange,
    SubscriptionStatus, SubscriptionUpdate,
};
pub use store::AccountStore;

use crate::{
    AccountId, BillingInterval, Clock, Idempotency, IdempotencyKey, InvalidArgument, MAX_CREDITS,
    MeterError, PlanCatalog, Recorded, StoreError, Timestamp,
};

/// Longest plan name, in characters (the catalog's limit).
pub const MAX_PLAN_NAME_CHARS: usize = 64;

/// Longest billing-provider id (customer, subscription), in characters.
pub const MAX_BILLING_REF_CHARS: usize = 255;

/// An `UpdateSubscription` as the transport parsed it, before the catalog
/// and the clock have checked it.
#[derive(Clone, Debug, Default)]
pub struct SubscriptionRequest {
    /// The plan's name.
    pub plan: String,
    /// The status; required.
    pub status: Option<SubscriptionStatus>,
    /// The billing interval; the plan's when `None`.
    pub interval: Option<BillingInterval>,
    /// The price per interval in micro-units; the plan's when `None`.
    pub amount_micros: Option<i64>,
    /// The billing period's start.
    pub period_start: Option<Timestamp>,
    /// The billing period's end.
    pub period_end: Option<Timestamp>,
    /// Whether the plan ends at the period's end.
    pub cancel_at_period_end: bool,
    /// The billing provider's customer id.
    pub customer_id: String,
    /// The billing provider's subscription id.
    pub subscription_id: String,
}

/// The subscription use cases.
#[derive(Debug)]
pub struct Subscriptions<S, C> {
    store: S,
    catalog: Arc<PlanCatalog>,
    clock: C,
    max_event_skew: Duration,
}

impl<S: AccountStore, C: Clock> Subscriptions<S, C> {
    /// Subscriptions over `store`, with plans from `catalog` and time from `clock`.
    pub fn new(store: S, catalog: Arc<PlanCatalog>, clock: C) -> Self {
        Self {
            store,
            catalog,
            clock,
            max_event_skew: Self::DEFAULT_MAX_EVENT_SKEW,
        }
    }

    /// How far ahead of meterd's clock an event time may be unless configured: 5 minutes.
    pub const DEFAULT_MAX_EVENT_SKEW: Duration = Duration::from_secs(300);

    /// The same, accepting event times up to `skew` ahead of the clock.
    #[must_use]
    pub fn with_max_event_skew(mut self, skew: Duration) -> Self {
        self.max_event_skew = skew;
        self
    }

    /// The plan catalog.
    pub fn catalog(&self) -> &PlanCatalog {
        &self.catalog
    }

    /// Registers the account, or notes a login of a registered one.
    pub async fn register(
        &self,
        account: AccountId,
        profile: ProfileFields,
        key: Option<IdempotencyKey>,
    ) -> Result<Recorded<(bool, AccountView)>, MeterError> {
        let profile = profile.check(Prefix::NESTED)?;
        let idempotency = Idempotency::new(key, &["register", &profile.fingerprint()]);
        let request = RegisterAccount {
            account,
            profile,
            idempotency,
            catalog: Arc::clone(&self.catalog),
        };
        let now = self.clock.now();
        let recorded = self.store.register(&request, now).await?;
        recorded.try_map(|outcome| {
            let view = self.view(&request.account, outcome.account, now)?;
            Ok((outcome.created, view))
        })
    }

    /// The account as of now; [`MeterError::NotFound`] if never registered.
    pub async fn account(&self, account: &AccountId) -> Result<AccountView, MeterError> {
        let now = self.clock.now();
        let stored = self.store.account(account, now).await?;
        self.view(account, stored, now)
    }

    /// The account's subscription as of now (the default plan without one),
    /// and the next reset of its allowance.
    pub async fn subscription(
        &self,
        account: &AccountId,
    ) -> Result<(Subscription, Option<Timestamp>), MeterError> {
        let now = self.clock.now();
        let stored = self.store.account(account, now).await?;
        Ok((
            self.settled(stored.subscription, now),
            stored.balance.reset_time(),
        ))
    }

    /// Applies a billing event's view of the subscription.
    pub async fn update(
        &self,
        account: AccountId,
        request: SubscriptionRequest,
        event_time: Option<Timestamp>,
        key: Option<IdempotencyKey>,
    ) -> Result<Recorded<ChangeOutcome>, MeterError> {
        if request.plan.chars().count() > MAX_PLAN_NAME_CHARS {
            return Err(InvalidArgument::new(
                "plan",
                format!(
                    "is {} characters long; plan names are at most {MAX_PLAN_NAME_CHARS}",
                    request.plan.chars().count()
                ),
            )
            .into());
        }
        let Some(plan) = self.catalog.get(&request.plan) else {
            let known: Vec<&str> = self.catalog.plans().map(|p| p.name.as_str()).collect();
            return Err(InvalidArgument::new(
                "plan",
                format!(
                    "{:?} is not a plan of the catalog (it has: {})",
                    request.plan,
                    known.join(", ")
                ),
            )
            .into());
        };
        let status = request.status.ok_or_else(|| {
            InvalidArgument::new(
                "status",
                "is required (active, trialing, past_due, canceled, unpaid, incomplete, incomplete_expired, paused)",
            )
        })?;
        let amount_micros = request.amount_micros.unwrap_or(plan.price_micros);
        if !(0..=MAX_CREDITS).contains(&amount_micros) {
            return Err(InvalidArgument::new(
                "amount_micros",
                format!("is {amount_micros}; it must be from 0 to {MAX_CREDITS}"),
            )
            .into());
        }
        if let Some(start) = request.period_start {
            self.not_ahead("current_period_start", start)?;
        }
        if let (Some(start), Some(end)) = (request.period_start, request.period_end)
            && end <= start
        {
            return Err(InvalidArgument::new(
                "current_period_end",
                format!("is {end}, not after current_period_start {start}"),
            )
            .into());
        }
        for (field, id) in [
            ("billing_customer_id", &request.customer_id),
            ("billing_subscription_id", &request.subscription_id),
        ] {
            check_billing_ref(field, id)?;
        }
        let update = SubscriptionUpdate {
            plan: plan.name.clone(),
            status,
            interval: request.interval.unwrap_or(plan.billing_interval),
            amount_micros,
            period_start: request.period_start,
            period_end: request.period_end,
            cancel_at_period_end: request.cancel_at_period_end,
            customer_id: request.customer_id,
            subscription_id: request.subscription_id,
        };
        let time = |t: Option<Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
        // The event time as sent: a retry without one is the same request.
        let sent = time(event_time);
        let event_time = self.event_time(event_time)?;
        let fingerprint = [
            "update".to_owned(),
            update.plan.clone(),
            status.to_string(),
            update.interval.as_str().to_owned(),
            amount_micros.to_string(),
            time(update.period_start),
            time(update.period_end),
            update.cancel_at_period_end.to_string(),
            update.customer_id.clone(),
            update.subscription_id.clone(),
            sent,
        ];
        let parts: Vec<&str> = fingerprint.iter().map(String::as_str).collect();
        let customer = update.customer_id.clone();
        let recorded = self
            .change(
                account.clone(),
                SubscriptionChange::Update(update),
                event_time,
                Idempotency::new(key, &parts),
            )
            .await?;
        // After a change that applied (and again on its replay): a failure
        // here answers UNAVAILABLE, and the caller's retry with its key links
        // again, at the change's own time, so a late replay does not take
        // the customer back from an account it moved to since. An ignored
        // (older) event links nothing.
        if !customer.is_empty() && recorded.outcome.applied {
            let time = recorded
                .outcome
                .subscription
                .updated_at
                .unwrap_or(event_time);
            self.store.link_customer(&customer, &account, time).await?;
        }
        Ok(recorded)
    }

    /// Records that the billing provider's `customer` pays for the
    /// registered `account` as of `event_time` (now without one): FindAccount
    /// answers it unless a later link names another account;
    /// [`MeterError::NotFound`] for an account never registered.
    pub async fn link_customer(
        &self,
        account: &AccountId,
        customer: &str,
        event_time: Option<Timestamp>,
    ) -> Result<(), MeterError> {
        check_customer(customer)?;
        let time = self.event_time(event_time)?;
        // Registered (or NotFound), read before anything is written.
        self.account(account).await?;
        Ok(self.store.link_customer(customer, account, time).await?)
    }

    /// The account the billing provider's customer pays for: the account of
    /// the latest subscription change that named the customer.
    pub async fn account_of_customer(
        &self,
        customer: &str,
    ) -> Result<Option<AccountId>, MeterError> {
        check_customer(customer)?;
        Ok(self.store.find_by_customer(customer).await?)
    }

    /// Cancels the subscription now or at the end of its billing period;
    /// with a `subscription_id`, only that billing subscription.
    pub async fn cancel(
        &self,
        account: AccountId,
        at_period_end: bool,
        subscription_id: String,
        event_time: Option<Timestamp>,
        key: Option<IdempotencyKey>,
    ) -> Result<Recorded<ChangeOutcome>, MeterError> {
        check_billing_ref("billing_subscription_id", &subscription_id)?;
        let sent = event_time.map(|t| t.to_string()).unwrap_or_default();
        let event_time = self.event_time(event_time)?;
        let idempotency = Idempotency::new(
            key,
            &[
                "cancel",
                &at_period_end.to_string(),
                &subscription_id,
                &sent,
            ],
        );
        let change = SubscriptionChange::Cancel {
            at_period_end,
            subscription_id,
        };
        self.change(account, change, event_time, idempotency).await
    }

    /// Changes the given profile fields of a registered account.
    pub async fn update_profile(
        &self,
        account: AccountId,
        fields: ProfileFields,
        key: Option<IdempotencyKey>,
    ) -> Result<Recorded<Profile>, MeterError> {
        let fields = fields.check(Prefix::TOP)?;
        let idempotency = Idempotency::new(key, &["profile", &fields.fingerprint()]);
        let request = UpdateProfile {
            account,
            fields,
            idempotency,
        };
        self.store.update_profile(&request, self.clock.now()).await
    }

    /// Removes every record of the account; `true` when it had any.
    pub async fn delete_account(&self, account: &AccountId) -> Result<bool, StoreError> {
        self.store.delete_account(account).await
    }

    async fn change(
        &self,
        account: AccountId,
        change: SubscriptionChange,
        event_time: Timestamp,
        idempotency: Option<Idempotency>,
    ) -> Result<Recorded<ChangeOutcome>, MeterError> {
        let request = ChangeSubscription {
            account,
            change,
            event_time,
            idempotency,
            catalog: Arc::clone(&self.catalog),
        };
        let now = self.clock.now();
        let recorded = self.store.change_subscription(&request, now).await?;
        // As of now: a plan whose period's end has passed reads as ended.
        Ok(recorded.map(|mut outcome| {
            outcome.subscription = outcome
                .subscription
                .settled(now, self.catalog.default_plan());
            outcome
        }))
    }

    /// The event's time, `now` without one; refused further ahead than the skew.
    fn event_time(&self, event_time: Option<Timestamp>) -> Result<Timestamp, InvalidArgument> {
        match event_time {
            None => Ok(self.clock.now()),
            Some(time) => self.not_ahead("event_time", time),
        }
    }

    /// `time` unless it is further ahead of the clock than the skew.
    fn not_ahead(
        &self,
        field: &'static str,
        time: Timestamp,
    ) -> Result<Timestamp, InvalidArgument> {
        let now = self.clock.now();
        let skew = i64::try_from(self.max_event_skew.as_millis()).unwrap_or(i64::MAX);
        if time.as_millis() > now.as_millis().saturating_add(skew) {
            return Err(InvalidArgument::new(
                field,
                format!(
                    "is {time}, more than {:?} ahead of meterd's clock ({now}; --max-event-skew)",
                    self.max_event_skew
                ),
            ));
        }
        Ok(time)
    }

    fn settled(&self, stored: Option<Subscription>, now: Timestamp) -> Subscription {
        let default = self.catalog.default_plan();
        stored.map_or_else(
            || Subscription::default_for(default),
            |s| s.settled(now, default),
        )
    }

    fn view(
        &self,
        account: &AccountId,
        stored: StoredAccount,
        now: Timestamp,
    ) -> Result<AccountView, MeterError> {
        let Some(profile) = stored.profile else {
            return Err(MeterError::NotFound(format!(
                "account {account} is not registered; call RegisterAccount first"
            )));
        };
        let subscription = self.settled(stored.subscription, now);
        Ok(AccountView {
            active: subscription.is_paying(&self.catalog.default_plan().name),
            profile,
            subscription,
            balance: stored.balance,
        })
    }
}

/// A required billing customer id (`billing_customer_id`).
fn check_customer(customer: &str) -> Result<(), InvalidArgument> {
    if customer.is_empty() {
        return Err(InvalidArgument::new(
            "billing_customer_id",
            "is required: the billing provider's customer id (Stripe cus_…)",
        ));
    }
    check_billing_ref("billing_customer_id", customer)
}

/// A billing-provider id: at most 255 characters of `A-Za-z0-9_-`, empty for none.
fn check_billing_ref(field: &'static str, id: &str) -> Result<(), InvalidArgument> {
    let ok = id.len() <= MAX_BILLING_REF_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(InvalidArgument::new(
            field,
            format!("must be at most {MAX_BILLING_REF_CHARS} characters of A-Za-z0-9_-"),
        ))
    }
}
