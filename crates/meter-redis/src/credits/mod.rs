//! [`CreditLedger`] on Redis: one script per mutation; balance reads fetch
//! the keys in one read-only script and settle what fell due in Rust
//! (`snapshot.rs`).

mod snapshot;

pub use snapshot::snapshot_script;
pub(crate) use snapshot::{settled_balance, text};

use std::sync::LazyLock;

use meter_core::{
    AccountId, Allowance, CreditBalance, CreditLedger, CreditPeriod, DeductCredits, DeductOutcome,
    Grant, GrantCredits, GrantKind, GrantOutcome, HistoryEntry, HistoryId, HistoryPage,
    HistoryQuery, HistoryRetention, Idempotency, IdempotencyWindow, InvalidArgument, MAX_CREDITS,
    MeterError, Recorded, ReserveCredits, ReserveOutcome, ResetCredits, ResetSchedule, ResetTo,
    SettleHold, SettleOutcome, Settlement, StoreError, Timestamp,
    credits::{MAX_LIVE_GRANTS, MAX_OPEN_HOLDS, total_overflow},
};
use redis::Value;

use crate::{
    RedisStore, keys, layout,
    script::{Layout, Library, LuaScript, ScriptCall, lib, names},
};

layout! {
    /// The credits hash `user:{<account_id>}:credits`, field by field as
    /// `redis-cli HGETALL` shows it (docs/redis-schema.md): the allowance,
    /// and the bookkeeping that spares the hot path reading grants and holds.
    pub struct CreditsHash as "CREDITS_HASH" {
        /// Credits of the current period, before use.
        total = "total",
        /// Credits of the period taken, held ones included.
        used = "used",
        /// When the current period ends.
        reset_date = "resetDate",
        /// The instant periods are counted from.
        reset_anchor = "resetAnchor",
        /// `day`, `week`, `month` or `year`.
        reset_period = "resetPeriod",
        /// When the balance last changed.
        last_update = "lastUpdate",
        /// The account's bookkeeping, `seq|period|grants|held|holdsNext`:
        /// the last number given to a generated grant or hold id; the
        /// number of the allowance period now running (every reset counts
        /// one); how many fields the grants hash has (at 0 it is not read);
        /// credits held by open holds; no later than the earliest expiry of
        /// an open hold (empty without holds). One field, because every
        /// field read costs each call.
        meta = "meta",
    }
}

layout! {
    /// What every credits script answers (then one text per live grant,
    /// and perhaps the settled trailer: `count_settled`),
    /// and what an idempotency record keeps.
    pub struct CreditsReply as "CREDITS_REPLY" {
        /// `ok`, `conflict` (key reused with other arguments), `overflow`,
        /// `reset_overflow`, `too_many_grants`, `too_many_holds`, `no_hold`
        /// or `above_hold`.
        status = "status",
        /// `1` when the change was made.
        applied = "applied",
        /// The allowance after the call, as in [`CreditsHash`].
        total = "total",
        /// The allowance's used credits after the call.
        used = "used",
        /// The next reset, absent without a schedule.
        reset_date = "reset_date",
        /// The schedule's anchor.
        reset_anchor = "reset_anchor",
        /// The schedule's period.
        reset_period = "reset_period",
        /// When the balance last changed; absent for an unknown account.
        last_update = "last_update",
        /// Credits held by open holds.
        held = "held",
        /// What the call made: a grant's id; a hold's `id|expiry`; a
        /// settlement's `commit|committed|returned` or `release|0|returned`;
        /// for `overflow` and `reset_overflow` the total it would pass, for
        /// `above_hold` the hold's amount.
        result = "result",
        /// `1` when this is the remembered reply of an earlier call.
        replayed = "replayed",
    }
}

/// The counts of a settled trailer: `settled:<credits expired>:<holds
/// expired>:<credits renewed>`, which `save` in `credits/account.lua`
/// appends to a reply after it was remembered (so never to a replay). A
/// grant's text always holds a `|`; the trailer never does.
fn settled_trailer(text: &[u8]) -> Option<[u64; 3]> {
    let counts = text.strip_prefix(b"settled:")?;
    let mut parts = counts.split(|&b| b == b':').map(|part| {
        std::str::from_utf8(part)
            .ok()
            .and_then(|n| n.parse::<u64>().ok())
    });
    let counts = [parts.next()??, parts.next()??, parts.next()??];
    parts.next().is_none().then_some(counts)
}

/// Counts in meterd's metrics what the call of a credits script settled,
/// from its reply as it arrives from Redis, whether or not its caller still
/// waits for it (the pipeline calls this for every reply of a script that
/// [`settles`](crate::script::LuaScript::settles)).
pub(crate) fn count_settled(reply: &Value) {
    if let Value::Array(items) = reply
        && let Some(Value::BulkString(last)) = items.last()
        && let Some([expired, holds, renewed]) = settled_trailer(last)
    {
        meter_metrics::metrics().settled(expired, holds, renewed);
    }
}

/// Takes the settled trailer (counted by [`count_settled`]) off the end of
/// a reply's grants.
pub(crate) fn drop_settled(grants: &mut Vec<Option<String>>) {
    if let Some(Some(last)) = grants.last()
        && settled_trailer(last.as_bytes()).is_some()
    {
        grants.pop();
    }
}

/// `credits/account.lua`: the account in memory, its rules, writes and reply.
pub(crate) const ACCOUNT: Library = Library {
    name: "credits/account.lua",
    source: include_str!("../lua/credits/account.lua"),
};

fn credits_script(name: &'static str, body: &str) -> LuaScript {
    LuaScript::new(
        name,
        &[lib::STORED, lib::MUTATION, lib::PERIOD, ACCOUNT],
        &[names::<CreditsHash>()],
        &[names::<CreditsReply>()],
        body,
    )
}

macro_rules! credits_scripts {
    ($($(#[$doc:meta])* $name:ident $getter:ident = $file:literal;)*) => {
        $(
            static $name: LazyLock<LuaScript> = LazyLock::new(|| {
                credits_script(concat!("credits/", $file), include_str!(concat!("../lua/credits/", $file)))
            });
            $(#[$doc])*
            pub fn $getter() -> &'static LuaScript {
                &$name
            }
        )*
    };
}

credits_scripts! {
    /// The deduct script: KEYS credits, grants, holds, history[, idempotency
    /// index, record]; ARGV now_ms, now_text, fingerprint, window_ms, history max
    /// entries, max age ms, then amount, key, reason.
    DEDUCT deduct_script = "deduct.lua";
    /// The grant script: as [`deduct_script`], then amount, kind, expires, wanted id, reason.
    GRANT grant_script = "grant.lua";
    /// The reserve script: as [`deduct_script`], then amount, expires_text, key, reason.
    RESERVE reserve_script = "reserve.lua";
    /// The settle script: as [`deduct_script`] with the hold's record, then hold id, amount, reason.
    SETTLE settle_script = "settle.lua";
}

static RESET: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "credits/reset.lua",
        &[
            lib::STORED,
            lib::MUTATION,
            lib::PERIOD,
            ACCOUNT,
            crate::accounts::SUBSCRIPTION,
        ],
        &[
            names::<CreditsHash>(),
            names::<crate::accounts::ProfileHash>(),
            names::<crate::accounts::SubscriptionHash>(),
        ],
        &[
            names::<CreditsReply>(),
            names::<crate::accounts::AccountReply>(),
            names::<crate::accounts::ProfileHash>(),
            names::<crate::accounts::SubscriptionHash>(),
        ],
        include_str!("../lua/credits/reset.lua"),
    )
});

/// The reset script: KEYS credits, grants, holds, history, profile,
/// subscription[, idempotency index, record]; ARGV as [`deduct_script`],
/// then total and period ('' for the plan's), key, the default plan (name,
/// interval, price, credits, period) and each plan's name, credits, period.
pub fn reset_script() -> &'static LuaScript {
    &RESET
}

static HISTORY: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "credits/history.lua",
        &[lib::STORED, lib::STREAM],
        &[],
        &[],
        include_str!("../lua/credits/history.lua"),
    )
    .reading_only()
});

/// The credit ledger on Redis.
#[derive(Clone, Debug)]
pub struct RedisCreditLedger {
    store: RedisStore,
    window: IdempotencyWindow,
    retention: HistoryRetention,
}

impl RedisCreditLedger {
    /// A ledger on `store` that remembers idempotency keys for `window` and
    /// keeps `retention` of each account's history.
    pub fn new(store: RedisStore, window: IdempotencyWindow, retention: HistoryRetention) -> Self {
        Self {
            store,
            window,
            retention,
        }
    }

    /// A call of `script` on the account's credit keys (and, with `record`,
    /// the account's idempotency index and the record), with the arguments
    /// every credits script starts with (`lua/lib/mutation.lua`,
    /// `lua/credits/account.lua`).
    fn call(
        &self,
        script: &'static LuaScript,
        account: &AccountId,
        record: Option<(String, &str)>,
        now: Timestamp,
    ) -> ScriptCall {
        let keys = vec![
            keys::credits(account),
            keys::grants(account),
            keys::holds(account),
            keys::history(account),
        ];
        self.call_on(script, keys, account, record, now)
    }

    /// [`Self::call`] on the given data keys.
    fn call_on(
        &self,
        script: &'static LuaScript,
        mut keys: Vec<String>,
        account: &AccountId,
        record: Option<(String, &str)>,
        now: Timestamp,
    ) -> ScriptCall {
        let fingerprint = record.as_ref().map_or("", |(_, fp)| fp).to_owned();
        if let Some((key, _)) = record {
            keys.push(keys::idempotency_index(account));
            keys.push(key);
        }
        script
            .call(&keys)
            .arg(now.as_millis())
            .arg(now.to_string())
            .arg(fingerprint)
            .arg(self.window.as_millis())
            .arg(self.retention.max_entries)
            .arg(self.retention.max_age_millis())
    }

    fn mutation(
        &self,
        script: &'static LuaScript,
        account: &AccountId,
        idempotency: Option<&Idempotency>,
        now: Timestamp,
    ) -> ScriptCall {
        let record = idempotency.map(|idem| {
            (
                keys::credits_idempotency(account, &idem.key),
                idem.fingerprint.as_str(),
            )
        });
        self.call(script, account, record, now)
    }

    /// Runs a credits script and reads its reply: the reply and the balance,
    /// or the error its status names.
    async fn run(
        &self,
        call: ScriptCall,
        account: &AccountId,
        idempotency: Option<&Idempotency>,
        amount: i64,
    ) -> Result<Recorded<(CreditsReply, CreditBalance)>, MeterError> {
        let mut values = self
            .store
            .run_values(call)
            .await
            .map_err(|e| describe(e, account))?;
        if values.len() < CreditsReply::NAMES.len() {
            return Err(StoreError::Protocol(format!(
                "credits script reply of {} values",
                values.len()
            ))
            .into());
        }
        let mut grants = values.split_off(CreditsReply::NAMES.len());
        drop_settled(&mut grants);
        let reply = CreditsReply::from_values(values).map_err(StoreError::Protocol)?;
        let count =
            |text: &Option<String>| text.as_deref().and_then(parse_count).unwrap_or_default();
        match reply.status.as_deref() {
            Some("ok") => {
                let balance = parse_balance(account, &reply, &grants)?;
                Ok(Recorded {
                    replayed: reply.replayed.as_deref() == Some("1"),
                    outcome: (reply, balance),
                })
            }
            Some("conflict") => Err(MeterError::IdempotencyConflict {
                key: idempotency
                    .map(|i| i.key.as_str().to_owned())
                    .unwrap_or_default(),
            }),
            Some("overflow") => Err(total_overflow(count(&reply.result), amount).into()),
            Some("reset_overflow") => Err(InvalidArgument::new(
                "total",
                format!(
                    "with the {} credits of live grants would exceed the maximum balance of {MAX_CREDITS}",
                    count(&reply.result)
                ),
            )
            .into()),
            Some("too_many_grants") => Err(MeterError::FailedPrecondition(format!(
                "the account has {MAX_LIVE_GRANTS} live grants, the most it may hold; \
                 grant more credits in one grant, or after some are used or expire"
            ))),
            Some("no_hold") => Err(MeterError::NotFound("no open hold of that id".into())),
            Some("above_hold") => Err(InvalidArgument::new(
                "amount",
                format!("holds {}, the most it can commit", count(&reply.result)),
            )
            .into()),
            Some("too_many_holds") => Err(MeterError::FailedPrecondition(format!(
                "the account has {MAX_OPEN_HOLDS} open holds, the most it may have; \
                 commit or release some first"
            ))),
            _ => Err(
                StoreError::Protocol(format!("unexpected credits script reply {reply:?}")).into(),
            ),
        }
    }
}

/// Names the account in a corrupt-data error, for the caller.
pub(crate) fn describe(error: StoreError, account: &AccountId) -> StoreError {
    match error {
        StoreError::Corrupt { key, detail, .. } => StoreError::Corrupt {
            what: format!("credits of account {account}"),
            key,
            detail,
        },
        other => other,
    }
}

/// A stored count: a plain decimal integer from 0 to [`MAX_CREDITS`], no
/// sign, no leading zero (the rule of `lua/lib/stored.lua`).
pub(crate) fn parse_count(text: &str) -> Option<i64> {
    let plain = text == "0"
        || (text.len() <= 16
            && text.starts_with(|c: char| ('1'..='9').contains(&c))
            && text.bytes().all(|b| b.is_ascii_digit()));
    text.parse::<i64>()
        .ok()
        .filter(|n| plain && *n <= MAX_CREDITS)
}

/// A stored time: exactly the form meterd writes, `2026-02-28T10:00:00.000Z`
/// (the rule of `lua/lib/stored.lua`). A text of that shape that parses as
/// a real date round-trips, so checking the shape is checking canonical form.
pub(crate) fn parse_time(text: &str) -> Option<Timestamp> {
    const SHAPE: &[u8; 24] = b"dddd-dd-ddTdd:dd:dd.dddZ";
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 24
        && bytes.iter().zip(SHAPE).all(|(b, s)| match s {
            b'd' => b.is_ascii_digit(),
            separator => b == separator,
        })
        // A leap second (`:60`) parses, but is not a time meterd writes.
        && bytes[17] <= b'5';
    shaped.then(|| Timestamp::parse(text)).flatten()
}

/// The balance a reply describes: the allowance from its fields, one grant
/// per text after them. Anything that does not parse is a protocol error
/// (the scripts checked what they read from storage).
pub(crate) fn parse_balance(
    account: &AccountId,
    reply: &CreditsReply,
    grants: &[Option<String>],
) -> Result<CreditBalance, StoreError> {
    let bad = |what: &str, value: Option<&str>| {
        StoreError::Protocol(format!(
            "credits reply for {account}: {what} holds {value:?}"
        ))
    };
    let count = |what: &str, value: Option<&str>| match value {
        None => Ok(0),
        Some(text) => parse_count(text).ok_or_else(|| bad(what, value)),
    };
    let time = |what: &str, value: Option<&str>| {
        value
            .map(|text| parse_time(text).ok_or_else(|| bad(what, value)))
            .transpose()
    };
    let schedule = match time("reset_date", reply.reset_date.as_deref())? {
        None => None,
        Some(next_reset) => Some(ResetSchedule {
            anchor: time("reset_anchor", reply.reset_anchor.as_deref())?
                .ok_or_else(|| bad("reset_anchor", None))?,
            period: reply
                .reset_period
                .as_deref()
                .and_then(|p| p.parse::<CreditPeriod>().ok())
                .ok_or_else(|| bad("reset_period", reply.reset_period.as_deref()))?,
            next_reset,
        }),
    };
    let grants = grants
        .iter()
        .map(|text| {
            let text = text.as_deref().unwrap_or_default();
            let fields: Vec<&str> = text.split('|').collect();
            let [id, kind, amount, left, held, created, expires] = fields[..] else {
                return Err(bad("grant", Some(text)));
            };
            Ok(Grant {
                id: id.to_owned(),
                kind: kind
                    .parse::<GrantKind>()
                    .map_err(|_| bad("grant kind", Some(text)))?,
                amount: count("grant amount", Some(amount))?,
                left: count("grant left", Some(left))?,
                held: count("grant held", Some(held))?,
                created: time("grant created", Some(created))?
                    .ok_or_else(|| bad("grant created", Some(text)))?,
                expires: time("grant expires", Some(expires).filter(|e| !e.is_empty()))?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CreditBalance {
        allowance: Allowance {
            total: count("total", reply.total.as_deref())?,
            used: count("used", reply.used.as_deref())?,
            schedule,
        },
        grants,
        held: count("held", reply.held.as_deref())?,
        last_update: time("last_update", reply.last_update.as_deref())?,
    })
}

impl CreditLedger for RedisCreditLedger {
    async fn balance(
        &self,
        account: &AccountId,
        now: Timestamp,
    ) -> Result<CreditBalance, StoreError> {
        snapshot::balance(&self.store, account, now).await
    }

    async fn deduct(
        &self,
        request: &DeductCredits,
        now: Timestamp,
    ) -> Result<Recorded<DeductOutcome>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let call = self
            .mutation(&DEDUCT, &request.account, idempotency, now)
            .arg(request.amount)
            .arg(idempotency.map_or("", |i| i.key.as_str()))
            .arg(request.reason.as_str());
        let recorded = self
            .run(call, &request.account, idempotency, request.amount)
            .await?;
        Ok(recorded.map(|(reply, balance)| DeductOutcome {
            applied: reply.applied.as_deref() == Some("1"),
            balance,
        }))
    }

    async fn grant(
        &self,
        request: &GrantCredits,
        now: Timestamp,
    ) -> Result<Recorded<GrantOutcome>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let call = self
            .mutation(&GRANT, &request.account, idempotency, now)
            .arg(request.amount)
            .arg(request.kind.as_str())
            .arg(request.expires.map(|t| t.to_string()).unwrap_or_default())
            .arg(request.wanted_id())
            .arg(request.reason.as_str());
        let recorded = self
            .run(call, &request.account, idempotency, request.amount)
            .await?;
        Ok(recorded.map(|(reply, balance)| GrantOutcome {
            grant_id: reply.result.unwrap_or_default(),
            balance,
        }))
    }

    async fn reset(
        &self,
        request: &ResetCredits,
        now: Timestamp,
    ) -> Result<Recorded<CreditBalance>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let account = &request.account;
        // Reset looks up the account's plan in its subscription.
        let keys = vec![
            keys::credits(account),
            keys::grants(account),
            keys::holds(account),
            keys::history(account),
            keys::profile(account),
            keys::subscription(account),
        ];
        let record = idempotency.map(|idem| {
            (
                keys::credits_idempotency(account, &idem.key),
                idem.fingerprint.as_str(),
            )
        });
        let mut call = self.call_on(&RESET, keys, account, record, now);
        match &request.to {
            ResetTo::Fixed { total, period } => {
                call = call
                    .arg(*total)
                    .arg(period.as_str())
                    .arg(idempotency.map_or("", |i| i.key.as_str()));
            }
            ResetTo::Plan { total, catalog } => {
                call = call
                    .arg(total.map(|t| t.to_string()).unwrap_or_default())
                    .arg("")
                    .arg(idempotency.map_or("", |i| i.key.as_str()));
                call = crate::accounts::default_plan_args(call, catalog.default_plan());
                for plan in catalog.plans() {
                    call = call
                        .arg(plan.name.as_str())
                        .arg(plan.credits)
                        .arg(plan.credit_period.as_str());
                }
            }
        }
        let recorded = self.run(call, &request.account, idempotency, 0).await?;
        Ok(recorded.map(|(_, balance)| balance))
    }

    async fn reserve(
        &self,
        request: &ReserveCredits,
        now: Timestamp,
    ) -> Result<Recorded<ReserveOutcome>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let expires = request.expires(now)?;
        let call = self
            .mutation(&RESERVE, &request.account, idempotency, now)
            .arg(request.amount)
            .arg(expires.to_string())
            .arg(idempotency.map_or("", |i| i.key.as_str()))
            .arg(request.reason.as_str());
        let recorded = self
            .run(call, &request.account, idempotency, request.amount)
            .await?;
        let account = &request.account;
        recorded.try_map(|(reply, balance)| {
            // `id|expiry` when a hold was made.
            let hold = match reply.result.as_deref() {
                None => None,
                Some(text) => {
                    let made = text
                        .split_once('|')
                        .and_then(|(id, expires)| Some((id.to_owned(), parse_time(expires)?)));
                    if made.is_none() {
                        return Err(StoreError::Protocol(format!(
                            "reserve reply for {account}: result {text:?}"
                        ))
                        .into());
                    }
                    made
                }
            };
            Ok(ReserveOutcome { hold, balance })
        })
    }

    async fn settle_hold(
        &self,
        request: &SettleHold,
        now: Timestamp,
    ) -> Result<Recorded<SettleOutcome>, MeterError> {
        let idempotency = request.idempotency();
        let hold = request.hold_id.as_str();
        let record = (
            keys::hold_idempotency(&request.account, &request.hold_id),
            idempotency.fingerprint.as_str(),
        );
        let call = self
            .call(&SETTLE, &request.account, Some(record), now)
            .arg(hold)
            .arg(request.commit.map(|c| c.to_string()).unwrap_or_default())
            .arg(request.reason.as_str());
        let recorded = self
            .run(call, &request.account, Some(&idempotency), 0)
            .await
            .map_err(|error| match error {
                MeterError::NotFound(_) => MeterError::NotFound(format!(
                    "no open hold {hold:?} on this account: it was never made, or it expired \
                     and its credits went back"
                )),
                MeterError::InvalidArgument(e) if e.field == "amount" => InvalidArgument::new(
                    "amount",
                    format!(
                        "is {}; hold {hold} {}",
                        request.commit.unwrap_or_default(),
                        e.problem
                    ),
                )
                .into(),
                other => other,
            })?;
        recorded.try_map(|(reply, balance)| {
            let text = reply.result.as_deref().unwrap_or_default();
            let parts: Vec<&str> = text.split('|').collect();
            let (Some(kind), Some(committed), Some(returned)) = (
                parts.first().filter(|k| ["commit", "release"].contains(k)),
                parts.get(1).and_then(|n| parse_count(n)),
                parts.get(2).and_then(|n| parse_count(n)),
            ) else {
                return Err(StoreError::Protocol(format!(
                    "settle reply for {}: result {text:?}",
                    request.account
                ))
                .into());
            };
            Ok(SettleOutcome {
                settlement: Settlement {
                    hold_id: hold.to_owned(),
                    committed,
                    returned,
                    commit: *kind == "commit",
                },
                balance,
            })
        })
    }

    async fn history(
        &self,
        account: &AccountId,
        query: &HistoryQuery,
        now: Timestamp,
    ) -> Result<HistoryPage, StoreError> {
        let key = keys::history(account);
        // Nothing is older than the first id there is (and Redis refuses `(0-0`).
        if query.before == Some(HistoryId { millis: 0, seq: 0 }) {
            return Ok(HistoryPage::default());
        }
        let oldest = u64::try_from(now.as_millis())
            .unwrap_or_default()
            .saturating_sub(self.retention.max_age_millis());
        let call = HISTORY
            .call(&[&key])
            .arg(self.retention.max_entries)
            .arg(oldest)
            .arg(query.before.map(|id| id.to_string()).unwrap_or_default())
            .arg(query.page_size + 1);
        let reply = self.store.run_raw(call).await?;
        let mut entries = parse_history(&key, reply)?;
        let next = if entries.len() > query.page_size as usize {
            entries.truncate(query.page_size as usize);
            entries.last().map(|(id, _)| *id)
        } else {
            None
        };
        Ok(HistoryPage { entries, next })
    }
}

/// The entries of an `XREVRANGE` reply (from `credits/history.lua`).
fn parse_history(key: &str, reply: Value) -> Result<Vec<(HistoryId, HistoryEntry)>, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        what: "credit history".to_owned(),
        key: key.to_owned(),
        detail,
    };
    let text = |value: &Value| snapshot::text(value).ok().flatten();
    let Value::Array(items) = reply else {
        return Err(StoreError::Protocol(format!("XREVRANGE reply {reply:?}")));
    };
    items
        .iter()
        .map(|item| {
            let Value::Array(pair) = item else {
                return Err(StoreError::Protocol(format!("XREVRANGE entry {item:?}")));
            };
            let (Some(id), Some(Value::Array(fields))) = (pair.first().and_then(text), pair.get(1))
            else {
                return Err(StoreError::Protocol(format!("XREVRANGE entry {item:?}")));
            };
            let id = HistoryId::parse("id", &id).map_err(|e| corrupt(e.to_string()))?;
            let packed = match (fields.first().and_then(text), fields.get(1).and_then(text)) {
                (Some(name), Some(value)) if name == "entry" && fields.len() == 2 => value,
                _ => return Err(corrupt(format!("entry {id} is not one `entry` field"))),
            };
            let bad = || corrupt(format!("entry {id} holds {packed:?}"));
            let parts: Vec<&str> = packed.splitn(9, '|').collect();
            let [
                time,
                kind,
                amount,
                change,
                remaining,
                key,
                grant,
                hold,
                reason,
            ] = parts[..]
            else {
                return Err(bad());
            };
            let signed = |v: &str| {
                v.parse::<i64>()
                    .ok()
                    .filter(|n| n.abs() <= MAX_CREDITS)
                    .ok_or_else(bad)
            };
            let mut entry = HistoryEntry::new(
                parse_time(time).ok_or_else(bad)?,
                kind.parse().map_err(|_| bad())?,
                signed(amount)?,
                signed(change)?,
                signed(remaining)?,
            );
            key.clone_into(&mut entry.key);
            grant.clone_into(&mut entry.grant);
            hold.clone_into(&mut entry.hold);
            reason.clone_into(&mut entry.reason);
            Ok((id, entry))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settled_trailer_is_never_a_grant() {
        assert_eq!(settled_trailer(b"settled:30:1:15"), Some([30, 1, 15]));
        for not in [
            "settled:1:2:3|paid|5|5|0|2026-03-10T12:00:00.000Z|",
            "settled:1:2",
            "settled:1:2:3:4",
            "settled:1:-2:3",
            "g1|paid|5|5|0|2026-03-10T12:00:00.000Z|",
        ] {
            assert_eq!(settled_trailer(not.as_bytes()), None, "{not}");
        }
        let mut grants = vec![
            Some("g1|paid|5|5|0|2026-03-10T12:00:00.000Z|".to_owned()),
            Some("settled:0:0:2".to_owned()),
        ];
        drop_settled(&mut grants);
        assert_eq!(grants.len(), 1);
        drop_settled(&mut grants);
        assert_eq!(grants.len(), 1, "a grant stays");
    }

    #[test]
    fn stored_counts_are_plain_integers_only() {
        for good in ["0", "1", "42", "9007199254740991"] {
            assert!(parse_count(good).is_some(), "{good}");
        }
        for bad in [
            "",
            "1.5",
            "1e3",
            "inf",
            "nan",
            "0x10",
            "+5",
            "-1",
            "007",
            " 1",
            "9007199254740992",
        ] {
            assert_eq!(parse_count(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stored_times_are_the_canonical_form_only() {
        assert!(parse_time("2026-02-28T10:00:00.000Z").is_some());
        for bad in [
            "2026-02-28T10:00:00Z",
            "2026-02-28T10:00:00.000+00:00",
            "2026-02-30T10:00:00.000Z",
            "2026-13-01T10:00:00.000Z",
            "2026-06-30T23:59:60.000Z",
            "2026-02-28t10:00:00.000Z",
            "2026-02-28T10:00:00.000z",
            "2026-02-28T10:00:00.0000",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
