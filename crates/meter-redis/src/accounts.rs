//! [`AccountStore`] on Redis: profiles and subscriptions in hashes beside
//! the credits, each call one script over all the account's keys, and
//! deleting every key of an account.

use std::sync::LazyLock;

use meter_core::{
    AccountId, AccountStore, BillingInterval, ChangeOutcome, ChangeSubscription, CreditBalance,
    HistoryRetention, Idempotency, IdempotencyWindow, MeterError, Plan, Profile, Recorded,
    RegisterAccount, RegisterOutcome, StoreError, StoredAccount, Subscription, SubscriptionChange,
    SubscriptionStatus, Timestamp, UpdateProfile,
};
use redis::Value;

use crate::{
    RedisStore,
    credits::{
        ACCOUNT, CreditsHash, CreditsReply, describe, parse_balance, parse_count, parse_time,
        settled_balance, text,
    },
    keys, layout,
    script::{Layout, Library, LuaScript, ScriptCall, lib, names},
};

layout! {
    /// The profile hash `user:{<account_id>}:profile`.
    pub struct ProfileHash as "PROFILE_HASH" {
        /// The user's email address.
        email = "email",
        /// The user's display name.
        name = "name",
        /// The URL of the user's picture.
        image = "image",
        /// The user's role in the app.
        role = "role",
        /// When the account was registered; present on every registered account.
        joined = "joined",
        /// When `RegisterAccount` was last called for it.
        last_login = "lastLogin",
    }
}

layout! {
    /// The subscription hash `user:{<account_id>}:subscription`.
    pub struct SubscriptionHash as "SUBSCRIPTION_HASH" {
        /// The plan's name.
        plan = "plan",
        /// Stripe's status name, e.g. `past_due`.
        status = "status",
        /// `month` or `year`.
        interval = "interval",
        /// The price per interval, in micro-units.
        amount_micros = "amountMicros",
        /// When the account moved to this plan.
        purchase_time = "purchaseTime",
        /// When the billing period started.
        period_start = "periodStart",
        /// When the billing period ends.
        renewal_time = "renewalTime",
        /// `1` when the plan ends at `renewalTime`, else `0`.
        cancel_at_period_end = "cancelAtPeriodEnd",
        /// When the subscription was canceled.
        canceled_time = "canceledTime",
        /// The billing provider's customer id.
        customer_id = "customerId",
        /// The billing provider's subscription id.
        subscription_id = "subscriptionId",
        /// The event time of the last change applied.
        updated_at = "updatedAt",
    }
}

layout! {
    /// The head of every account script's reply, which the profile, the
    /// subscription ([`SubscriptionHash`] order) and a credits reply follow.
    pub struct AccountReply as "ACCOUNT_REPLY" {
        /// `ok`, `conflict` (key reused with other arguments) or `not_found`.
        status = "status",
        /// `1` when the account was created (register) or the change applied.
        result = "result",
        /// `1` when this is the remembered reply of an earlier call.
        replayed = "replayed",
    }
}

/// `account/subscription.lua`: subscriptions and profiles, and their rules.
pub(crate) const SUBSCRIPTION: Library = Library {
    name: "account/subscription.lua",
    source: include_str!("lua/account/subscription.lua"),
};

fn account_script(name: &'static str, body: &str) -> LuaScript {
    LuaScript::new(
        name,
        &[
            lib::STORED,
            lib::MUTATION,
            lib::PERIOD,
            ACCOUNT,
            SUBSCRIPTION,
        ],
        &[
            names::<CreditsHash>(),
            names::<ProfileHash>(),
            names::<SubscriptionHash>(),
        ],
        &[
            names::<CreditsReply>(),
            names::<AccountReply>(),
            names::<ProfileHash>(),
            names::<SubscriptionHash>(),
        ],
        body,
    )
}

static REGISTER: LazyLock<LuaScript> = LazyLock::new(|| {
    account_script(
        "account/register.lua",
        include_str!("lua/account/register.lua"),
    )
});
static CHANGE: LazyLock<LuaScript> =
    LazyLock::new(|| account_script("account/change.lua", include_str!("lua/account/change.lua")));
static PROFILE: LazyLock<LuaScript> = LazyLock::new(|| {
    account_script(
        "account/profile.lua",
        include_str!("lua/account/profile.lua"),
    )
});
static GET: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "account/get.lua",
        &[],
        &[
            names::<CreditsHash>(),
            names::<ProfileHash>(),
            names::<SubscriptionHash>(),
        ],
        &[],
        include_str!("lua/account/get.lua"),
    )
    .reading_only()
});

/// The register script: KEYS credits, grants, holds, history, profile,
/// subscription[, idempotency index, record]; ARGV the mutation head, the
/// history retention, key, the default plan (name, interval, price,
/// credits, period), email, name, image, role.
pub fn register_script() -> &'static LuaScript {
    &REGISTER
}

/// The account read script: the keys of [`register_script`], no ARGV.
pub fn get_script() -> &'static LuaScript {
    &GET
}

/// Index reads that race with new idempotency records before giving up.
const DELETE_TRIES: usize = 5;

/// Deletes a billing customer's index entry if it names the account.
static UNLINK: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "account/unlink.lua",
        &[],
        &[],
        &[],
        "if redis.call('HGET', KEYS[1], 'account') == ARGV[1] then return redis.call('DEL', KEYS[1]) end\nreturn 0\n",
    )
});

/// Points a billing customer's index entry at an account unless a later
/// link points it elsewhere. ARGV: the account, the link's time (ms).
static LINK: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "account/link.lua",
        &[],
        &[],
        &[],
        "local t = redis.call('HGET', KEYS[1], 'time')\n\
         if t and tonumber(t) > tonumber(ARGV[2]) then return 0 end\n\
         redis.call('HSET', KEYS[1], 'account', ARGV[1], 'time', ARGV[2])\n\
         return 1\n",
    )
});

static DELETE: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "account/delete.lua",
        &[],
        &[],
        &[],
        include_str!("lua/account/delete.lua"),
    )
});

/// The account store on Redis.
#[derive(Clone, Debug)]
pub struct RedisAccounts {
    store: RedisStore,
    window: IdempotencyWindow,
    retention: HistoryRetention,
}

/// Adds the default plan's arguments (name, interval, price, credits, period).
pub(crate) fn default_plan_args(call: ScriptCall, plan: &Plan) -> ScriptCall {
    call.arg(plan.name.as_str())
        .arg(plan.billing_interval.as_str())
        .arg(plan.price_micros)
        .arg(plan.credits)
        .arg(plan.credit_period.as_str())
}

impl RedisAccounts {
    /// Accounts on `store` that remember idempotency keys for `window` and
    /// keep `retention` of each account's credit history.
    pub fn new(store: RedisStore, window: IdempotencyWindow, retention: HistoryRetention) -> Self {
        Self {
            store,
            window,
            retention,
        }
    }

    /// A call of `script` on every key of the account (and the idempotency
    /// index and record with a key), with the arguments every account script
    /// starts with: the mutation head, the history retention, the key, the
    /// default plan.
    fn call(
        &self,
        script: &'static LuaScript,
        account: &AccountId,
        idempotency: Option<&Idempotency>,
        default: &Plan,
        now: Timestamp,
    ) -> ScriptCall {
        let mut keys = vec![
            keys::credits(account),
            keys::grants(account),
            keys::holds(account),
            keys::history(account),
            keys::profile(account),
            keys::subscription(account),
        ];
        if let Some(idem) = idempotency {
            keys.push(keys::idempotency_index(account));
            keys.push(keys::account_idempotency(account, &idem.key));
        }
        let call = script
            .call(&keys)
            .arg(now.as_millis())
            .arg(now.to_string())
            .arg(idempotency.map_or("", |i| i.fingerprint.as_str()))
            .arg(self.window.as_millis())
            .arg(self.retention.max_entries)
            .arg(self.retention.max_age_millis())
            .arg(idempotency.map_or("", |i| i.key.as_str()));
        default_plan_args(call, default)
    }

    /// Runs an account script: its head, the profile and subscription as
    /// stored, and the balance; `conflict` as the error it names.
    async fn run(
        &self,
        call: ScriptCall,
        account: &AccountId,
        idempotency: Option<&Idempotency>,
    ) -> Result<(AccountReply, StoredAccount), MeterError> {
        let values = self
            .store
            .run_values(call)
            .await
            .map_err(|e| describe(e, account))?;
        let (head, stored) = parse_account(account, values)?;
        if head.status.as_deref() == Some("conflict") {
            return Err(conflict(idempotency));
        }
        Ok((head, stored))
    }
}

fn conflict(idempotency: Option<&Idempotency>) -> MeterError {
    MeterError::IdempotencyConflict {
        key: idempotency
            .map(|i| i.key.as_str().to_owned())
            .unwrap_or_default(),
    }
}

/// Splits `values` at each length of `lengths`, the rest last.
fn split(mut values: Vec<Option<String>>, lengths: &[usize]) -> Option<Vec<Vec<Option<String>>>> {
    let mut parts = Vec::with_capacity(lengths.len() + 1);
    for &length in lengths {
        if values.len() < length {
            return None;
        }
        let rest = values.split_off(length);
        parts.push(values);
        values = rest;
    }
    parts.push(values);
    Some(parts)
}

/// The head, profile, subscription and balance of an account script's reply.
fn parse_account(
    account: &AccountId,
    values: Vec<Option<String>>,
) -> Result<(AccountReply, StoredAccount), StoreError> {
    let protocol = || StoreError::Protocol(format!("account script reply for {account}"));
    let lengths = [
        AccountReply::NAMES.len(),
        ProfileHash::NAMES.len(),
        SubscriptionHash::NAMES.len(),
        CreditsReply::NAMES.len(),
    ];
    let (head, parts) = match values.len() {
        // A conflict replies the head alone.
        n if n <= AccountReply::NAMES.len() => {
            let mut values = values;
            values.resize(AccountReply::NAMES.len(), None);
            let head = AccountReply::from_values(values).map_err(StoreError::Protocol)?;
            return Ok((
                head,
                StoredAccount {
                    profile: None,
                    subscription: None,
                    balance: CreditBalance::default(),
                },
            ));
        }
        _ => {
            let mut parts = split(values, &lengths).ok_or_else(protocol)?.into_iter();
            let head = AccountReply::from_values(parts.next().ok_or_else(protocol)?)
                .map_err(StoreError::Protocol)?;
            (head, parts)
        }
    };
    let mut parts = parts;
    let mut next = || parts.next().ok_or_else(protocol);
    let profile = parse_profile(
        account,
        ProfileHash::from_values(next()?).map_err(StoreError::Protocol)?,
    )?;
    let subscription = parse_subscription(
        account,
        SubscriptionHash::from_values(next()?).map_err(StoreError::Protocol)?,
    )?;
    let credits = CreditsReply::from_values(next()?).map_err(StoreError::Protocol)?;
    let mut grants = next()?;
    crate::credits::drop_settled(&mut grants);
    let balance = parse_balance(account, &credits, &grants)?;
    Ok((
        head,
        StoredAccount {
            profile,
            subscription,
            balance,
        },
    ))
}

/// A corrupt-data error for a field of one of the account's hashes.
fn corrupt(account: &AccountId, key: String, field: &str, value: Option<&str>) -> StoreError {
    StoreError::Corrupt {
        what: format!("account {account}"),
        key,
        detail: format!("field {field} holds {value:?}"),
    }
}

/// The profile a [`ProfileHash`] holds; `None` without `joined`.
fn parse_profile(account: &AccountId, hash: ProfileHash) -> Result<Option<Profile>, StoreError> {
    let time = |field: &str, value: Option<String>| {
        value
            .as_deref()
            .and_then(parse_time)
            .ok_or_else(|| corrupt(account, keys::profile(account), field, value.as_deref()))
    };
    if hash.joined.is_none() {
        return Ok(None);
    }
    Ok(Some(Profile {
        joined: time("joined", hash.joined)?,
        last_login: time("lastLogin", hash.last_login)?,
        email: hash.email.unwrap_or_default(),
        name: hash.name.unwrap_or_default(),
        image: hash.image.unwrap_or_default(),
        role: hash.role.unwrap_or_default(),
    }))
}

/// The subscription a [`SubscriptionHash`] holds; `None` without a plan.
pub(crate) fn parse_subscription(
    account: &AccountId,
    hash: SubscriptionHash,
) -> Result<Option<Subscription>, StoreError> {
    let Some(plan) = hash.plan else {
        return Ok(None);
    };
    let bad = |field: &str, value: Option<&str>| {
        corrupt(account, keys::subscription(account), field, value)
    };
    let time = |field: &str, value: Option<String>| {
        value
            .map(|text| parse_time(&text).ok_or_else(|| bad(field, Some(&text))))
            .transpose()
    };
    Ok(Some(Subscription {
        plan,
        status: hash
            .status
            .as_deref()
            .and_then(|s| s.parse::<SubscriptionStatus>().ok())
            .ok_or_else(|| bad("status", hash.status.as_deref()))?,
        interval: hash
            .interval
            .as_deref()
            .and_then(|s| s.parse::<BillingInterval>().ok())
            .ok_or_else(|| bad("interval", hash.interval.as_deref()))?,
        amount_micros: hash
            .amount_micros
            .as_deref()
            .and_then(parse_count)
            .ok_or_else(|| bad("amountMicros", hash.amount_micros.as_deref()))?,
        cancel_at_period_end: match hash.cancel_at_period_end.as_deref() {
            Some("1") => true,
            Some("0") => false,
            other => return Err(bad("cancelAtPeriodEnd", other)),
        },
        purchase_time: time("purchaseTime", hash.purchase_time)?,
        period_start: time("periodStart", hash.period_start)?,
        renewal_time: time("renewalTime", hash.renewal_time)?,
        canceled_time: time("canceledTime", hash.canceled_time)?,
        updated_at: time("updatedAt", hash.updated_at)?,
        customer_id: hash.customer_id.unwrap_or_default(),
        subscription_id: hash.subscription_id.unwrap_or_default(),
    }))
}

impl AccountStore for RedisAccounts {
    async fn account(
        &self,
        account: &AccountId,
        now: Timestamp,
    ) -> Result<StoredAccount, StoreError> {
        let keys = [
            keys::credits(account),
            keys::grants(account),
            keys::holds(account),
            keys::history(account),
            keys::profile(account),
            keys::subscription(account),
        ];
        let reply = self
            .store
            .run_raw(GET.call(&keys))
            .await
            .map_err(|e| describe(e, account))?;
        let protocol = || StoreError::Protocol(format!("account/get.lua reply for {account}"));
        let Value::Array(mut parts) = reply else {
            return Err(protocol());
        };
        if parts.len() != 5 {
            return Err(protocol());
        }
        let credits = parts.split_off(2);
        let hash = |value: Value| -> Result<Vec<Option<String>>, StoreError> {
            let Value::Array(values) = value else {
                return Err(protocol());
            };
            values
                .iter()
                .map(|v| text(v).map_err(|()| protocol()))
                .collect()
        };
        let mut parts = parts.into_iter();
        let profile = hash(parts.next().ok_or_else(protocol)?)?;
        let subscription = hash(parts.next().ok_or_else(protocol)?)?;
        Ok(StoredAccount {
            profile: parse_profile(
                account,
                ProfileHash::from_values(profile).map_err(StoreError::Protocol)?,
            )?,
            subscription: parse_subscription(
                account,
                SubscriptionHash::from_values(subscription).map_err(StoreError::Protocol)?,
            )?,
            balance: settled_balance(account, credits, now)?,
        })
    }

    async fn register(
        &self,
        request: &RegisterAccount,
        now: Timestamp,
    ) -> Result<Recorded<RegisterOutcome>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let fields = &request.profile;
        let text = |value: &Option<String>| value.clone().unwrap_or_default();
        let call = self
            .call(
                &REGISTER,
                &request.account,
                idempotency,
                request.catalog.default_plan(),
                now,
            )
            .arg(text(&fields.email))
            .arg(text(&fields.name))
            .arg(text(&fields.image))
            .arg(text(&fields.role));
        let (head, account) = self.run(call, &request.account, idempotency).await?;
        Ok(Recorded {
            replayed: head.replayed.as_deref() == Some("1"),
            outcome: RegisterOutcome {
                created: head.result.as_deref() == Some("1"),
                account,
            },
        })
    }

    async fn change_subscription(
        &self,
        request: &ChangeSubscription,
        now: Timestamp,
    ) -> Result<Recorded<ChangeOutcome>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let call = self.call(
            &CHANGE,
            &request.account,
            idempotency,
            request.catalog.default_plan(),
            now,
        );
        let time = |t: Option<Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
        let event = request.event_time.to_string();
        let mut call = match &request.change {
            SubscriptionChange::Update(u) => call
                .arg("update")
                .arg(event)
                .arg(u.plan.as_str())
                .arg(u.status.as_str())
                .arg(u.interval.as_str())
                .arg(u.amount_micros)
                .arg(time(u.period_start))
                .arg(time(u.period_end))
                .arg(if u.cancel_at_period_end { "1" } else { "0" })
                .arg(u.customer_id.as_str())
                .arg(u.subscription_id.as_str()),
            SubscriptionChange::Cancel {
                at_period_end,
                subscription_id,
            } => call
                .arg(if *at_period_end {
                    "cancel_end"
                } else {
                    "cancel_now"
                })
                .arg(event)
                .arg(&["", "", "", "", "", "", "", ""][..])
                .arg(subscription_id.as_str()),
        };
        for plan in request.catalog.plans() {
            call = call
                .arg(plan.name.as_str())
                .arg(plan.credits)
                .arg(plan.credit_period.as_str());
        }
        let (head, account) = self.run(call, &request.account, idempotency).await?;
        if head.status.as_deref() == Some("period_ended") {
            return Err(MeterError::FailedPrecondition(format!(
                "the billing period ended at {} and no renewal was recorded; \
                 record the renewal (UpdateSubscription) first, or cancel now",
                head.result.as_deref().unwrap_or("?")
            )));
        }
        let subscription = account.subscription.ok_or_else(|| {
            StoreError::Protocol(format!(
                "account/change.lua replied no subscription for {}",
                request.account
            ))
        })?;
        Ok(Recorded {
            replayed: head.replayed.as_deref() == Some("1"),
            outcome: ChangeOutcome {
                subscription,
                applied: head.result.as_deref() == Some("1"),
                next_credit_reset: account.balance.reset_time(),
            },
        })
    }

    async fn update_profile(
        &self,
        request: &UpdateProfile,
        now: Timestamp,
    ) -> Result<Recorded<Profile>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let account = &request.account;
        let mut keys = vec![keys::profile(account)];
        if let Some(idem) = idempotency {
            keys.push(keys::idempotency_index(account));
            keys.push(keys::account_idempotency(account, &idem.key));
        }
        let given =
            |value: &Option<String>| value.as_ref().map(|v| format!("={v}")).unwrap_or_default();
        let fields = &request.fields;
        let call = PROFILE
            .call(&keys)
            .arg(now.as_millis())
            .arg(now.to_string())
            .arg(idempotency.map_or("", |i| i.fingerprint.as_str()))
            .arg(self.window.as_millis())
            .arg(given(&fields.email))
            .arg(given(&fields.name))
            .arg(given(&fields.image))
            .arg(given(&fields.role));
        let mut values = self
            .store
            .run_values(call)
            .await
            .map_err(|e| describe(e, account))?;
        if values.len() < AccountReply::NAMES.len() {
            values.resize(AccountReply::NAMES.len(), None);
        }
        let rest = values.split_off(AccountReply::NAMES.len());
        let head = AccountReply::from_values(values).map_err(StoreError::Protocol)?;
        match head.status.as_deref() {
            Some("ok") => {}
            Some("conflict") => return Err(conflict(idempotency)),
            Some("not_found") => {
                return Err(MeterError::NotFound(format!(
                    "account {account} is not registered; call RegisterAccount first"
                )));
            }
            other => {
                return Err(
                    StoreError::Protocol(format!("account/profile.lua status {other:?}")).into(),
                );
            }
        }
        let profile = parse_profile(
            account,
            ProfileHash::from_values(rest).map_err(StoreError::Protocol)?,
        )?
        .ok_or_else(|| {
            StoreError::Protocol(format!(
                "account/profile.lua replied no profile for {account}"
            ))
        })?;
        Ok(Recorded {
            replayed: head.replayed.as_deref() == Some("1"),
            outcome: profile,
        })
    }

    async fn link_customer(
        &self,
        customer: &str,
        account: &AccountId,
        time: Timestamp,
    ) -> Result<(), StoreError> {
        // The account's list first: an entry it does not list is not found,
        // and one it lists is removed by DeleteAccount.
        let list = keys::billing_customers(account);
        let mut add = redis::cmd("SADD");
        add.arg(&list).arg(customer);
        self.store.command(add, &list).await?;
        let key = keys::billing_customer(customer);
        self.store
            .run_raw(
                LINK.call(&[&key])
                    .arg(account.as_str())
                    .arg(time.as_millis()),
            )
            .await
            .map(drop)
    }

    async fn find_by_customer(&self, customer: &str) -> Result<Option<AccountId>, StoreError> {
        let key = keys::billing_customer(customer);
        let mut get = redis::cmd("HGET");
        get.arg(&key).arg("account");
        match self.store.command(get, &key).await? {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let account =
                    AccountId::parse("account_id", &text).map_err(|e| StoreError::Corrupt {
                        what: format!("the account of billing customer {customer}"),
                        key,
                        detail: e.to_string(),
                    })?;
                // An entry its account no longer lists (the account was
                // deleted meanwhile) is not found.
                let list = keys::billing_customers(&account);
                let mut listed = redis::cmd("SISMEMBER");
                listed.arg(&list).arg(customer);
                match self.store.command(listed, &list).await? {
                    Value::Int(1) => Ok(Some(account)),
                    Value::Int(_) => Ok(None),
                    other => Err(StoreError::Protocol(format!("SISMEMBER {list}: {other:?}"))),
                }
            }
            other => Err(StoreError::Protocol(format!(
                "HGET {key} account: {other:?}"
            ))),
        }
    }

    async fn delete_account(&self, account: &AccountId) -> Result<bool, StoreError> {
        let fixed = keys::account_keys(account);
        let index = keys::idempotency_index(account);
        // The index entries of its customers go before the account's keys
        // (a failure leaves the account whole, its list with it, for the
        // retry) and once more after (a link that landed meanwhile).
        let customers = self.customers_of(account).await?;
        self.unlink_customers(&customers, account).await?;
        for attempt in 0..DELETE_TRIES {
            if attempt > 0 {
                // Idempotent calls on the account are landing meanwhile.
                tokio::time::sleep(std::time::Duration::from_millis(5 << attempt)).await;
            }
            let mut listing = redis::cmd("ZRANGE");
            listing.arg(&index).arg(0).arg(-1);
            let records = members(self.store.command(listing, &index).await?)?;
            let rankings = self.rankings_of(account, &records).await?;
            self.leave(account, &rankings).await?;
            let mut keys = fixed.clone();
            keys.extend(records);
            let call = DELETE.call(&keys).arg(fixed.len());
            match self.store.run_raw(call).await? {
                Value::Int(existed) => {
                    // Again: a record that landed between the two raised
                    // its rankings while its usage went.
                    self.leave(account, &rankings).await?;
                    self.unlink_customers(&customers, account).await?;
                    return Ok(existed == 1);
                }
                Value::BulkString(text) if text == b"retry" => {}
                other => {
                    return Err(StoreError::Protocol(format!(
                        "account/delete.lua reply {other:?}"
                    )));
                }
            }
        }
        Err(StoreError::Overloaded(format!(
            "idempotent calls on account {account} kept adding records during {DELETE_TRIES} tries to delete it; nothing was deleted"
        )))
    }
}

impl RedisAccounts {
    /// The billing customers linked to the account.
    async fn customers_of(&self, account: &AccountId) -> Result<Vec<String>, StoreError> {
        let list = keys::billing_customers(account);
        let mut read = redis::cmd("SMEMBERS");
        read.arg(&list);
        members(self.store.command(read, &list).await?)
    }

    /// Removes each of `customers`' index entries that names `account`.
    async fn unlink_customers(
        &self,
        customers: &[String],
        account: &AccountId,
    ) -> Result<(), StoreError> {
        for customer in customers {
            let key = keys::billing_customer(customer);
            self.store
                .run_raw(UNLINK.call(&[&key]).arg(account.as_str()))
                .await?;
        }
        Ok(())
    }

    /// The top-consumer rankings `account` is in: the ranking of each
    /// metric each of its usage period hashes (among `records`, its index)
    /// holds. DeleteAccount leaves them (other slots on Redis Cluster)
    /// before the account's keys go, so a failure leaves them for the
    /// retry, and once more after.
    async fn rankings_of(
        &self,
        account: &AccountId,
        records: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let periods: Vec<(&String, meter_core::UsagePeriod)> = records
            .iter()
            .filter_map(|key| keys::usage_period_of(account, key).map(|p| (key, p)))
            .collect();
        let reads = periods.iter().map(|(key, _)| {
            let mut fields = redis::cmd("HKEYS");
            fields.arg(key.as_str());
            self.store.command(fields, key)
        });
        let mut rankings = Vec::new();
        for ((_, period), metrics) in periods
            .iter()
            .zip(futures_util::future::join_all(reads).await)
        {
            for metric in members(metrics?)? {
                rankings.push(keys::usage_ranking(&metric, *period));
            }
        }
        Ok(rankings)
    }

    /// Takes `account` out of `rankings`.
    async fn leave(&self, account: &AccountId, rankings: &[String]) -> Result<(), StoreError> {
        let leaves = rankings.iter().map(|ranking| {
            let mut leave = redis::cmd("ZREM");
            leave.arg(ranking).arg(account.as_str());
            self.store.command(leave, ranking)
        });
        for left in futures_util::future::join_all(leaves).await {
            left?;
        }
        Ok(())
    }
}

/// The members of a `ZRANGE`, `HKEYS` or `SMEMBERS` reply.
fn members(reply: Value) -> Result<Vec<String>, StoreError> {
    match reply {
        Value::Array(items) | Value::Set(items) => items
            .into_iter()
            .map(|item| match item {
                Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
                _ => None,
            })
            .collect::<Option<_>>()
            .ok_or_else(|| StoreError::Protocol("a list of keys with one not a string".into())),
        other => Err(StoreError::Protocol(format!(
            "a list of keys expected, not {other:?}"
        ))),
    }
}
