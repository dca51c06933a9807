//! [`StatsStore`] on Redis: the stats hash, the recent conversations (a
//! list) and the conversation ids counted (a set), one script per call.

use std::sync::LazyLock;

use chrono::NaiveDate;
use meter_core::{
    AccountId, Conversation, Idempotency, IdempotencyWindow, LoginOutcome, MeterError,
    RecordConversation, RecordLogin, Recorded, ResetStats, SetMood, Stats, StatsOutcome,
    StatsStore, StoreError, Subscription, Timestamp,
};
use redis::Value;

use crate::{
    RedisStore,
    accounts::{SubscriptionHash, parse_subscription},
    credits::{describe, parse_count, parse_time, text},
    keys, layout,
    script::{Layout, Library, LuaScript, ScriptCall, lib, names},
};

layout! {
    /// The stats hash `user:{<account_id>}:stats`.
    pub struct StatsHash as "STATS_HASH" {
        /// Conversations counted.
        conversations = "conversations",
        /// The mood score, one decimal (`7.5`); absent before any was set.
        mood_score = "moodScore",
        /// Local days with a login.
        days_active = "daysActive",
        /// Consecutive local days with a login, up to the last.
        login_streak = "loginStreak",
        /// The longest streak.
        longest_streak = "longestStreak",
        /// The local day of the last login counted, `YYYY-MM-DD`.
        last_login_date = "lastLoginDate",
    }
}

layout! {
    /// The head of every stats script's reply, which the stats hash's fields
    /// ([`StatsHash`] order) and the recent conversations follow.
    pub struct StatsReply as "STATS_REPLY" {
        /// `ok` or `conflict`.
        status = "status",
        /// `1`: a login that was the first of its day, a conversation counted.
        result = "result",
        /// `1` when this is the remembered reply of an earlier call.
        replayed = "replayed",
    }
}

/// `stats/stats.lua`: the stats in memory, their rules, writes and reply.
const STATS: Library = Library {
    name: "stats/stats.lua",
    source: include_str!("lua/stats/stats.lua"),
};

fn stats_script(name: &'static str, body: &str) -> LuaScript {
    LuaScript::new(
        name,
        &[lib::STORED, lib::MUTATION, STATS],
        &[names::<StatsHash>(), names::<SubscriptionHash>()],
        &[
            names::<StatsReply>(),
            names::<StatsHash>(),
            names::<SubscriptionHash>(),
        ],
        body,
    )
}

static LOGIN: LazyLock<LuaScript> =
    LazyLock::new(|| stats_script("stats/login.lua", include_str!("lua/stats/login.lua")));
static CONVERSATION: LazyLock<LuaScript> = LazyLock::new(|| {
    stats_script(
        "stats/conversation.lua",
        include_str!("lua/stats/conversation.lua"),
    )
});
static MOOD: LazyLock<LuaScript> =
    LazyLock::new(|| stats_script("stats/mood.lua", include_str!("lua/stats/mood.lua")));
static RESET: LazyLock<LuaScript> =
    LazyLock::new(|| stats_script("stats/reset.lua", include_str!("lua/stats/reset.lua")));
static GET: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "stats/get.lua",
        &[],
        &[names::<StatsHash>(), names::<SubscriptionHash>()],
        &[],
        include_str!("lua/stats/get.lua"),
    )
    .reading_only()
});

/// The login script: KEYS stats, recent, seen, subscription[, idempotency index, record];
/// ARGV the mutation head, the local day and the day before.
pub fn login_script() -> &'static LuaScript {
    &LOGIN
}

/// The stats read script: KEYS stats, recent, seen, subscription; no ARGV.
pub fn get_script() -> &'static LuaScript {
    &GET
}

/// The stats store on Redis.
#[derive(Clone, Debug)]
pub struct RedisStats {
    store: RedisStore,
    window: IdempotencyWindow,
}

impl RedisStats {
    /// Stats on `store`, remembering idempotency keys for `window`.
    pub fn new(store: RedisStore, window: IdempotencyWindow) -> Self {
        Self { store, window }
    }

    fn call(
        &self,
        script: &'static LuaScript,
        account: &AccountId,
        idempotency: Option<&Idempotency>,
        now: Timestamp,
    ) -> ScriptCall {
        let mut keys = vec![
            keys::stats(account),
            keys::stats_recent(account),
            keys::stats_seen(account),
            keys::subscription(account),
        ];
        if let Some(idem) = idempotency {
            keys.push(keys::idempotency_index(account));
            keys.push(keys::stats_idempotency(account, &idem.key));
        }
        script
            .call(&keys)
            .arg(now.as_millis())
            .arg(now.to_string())
            .arg(idempotency.map_or("", |i| i.fingerprint.as_str()))
            .arg(self.window.as_millis())
    }

    /// Runs a stats script: whether its `result` is `1`, the stats and the
    /// subscription it answers, and whether it was replayed.
    async fn run(
        &self,
        call: ScriptCall,
        account: &AccountId,
        idempotency: Option<&Idempotency>,
    ) -> Result<Recorded<StatsOutcome>, MeterError> {
        let mut values = self
            .store
            .run_values(call)
            .await
            .map_err(|e| describe(e, account))?;
        let head_len = StatsReply::NAMES.len();
        if values.len() < head_len {
            values.resize(head_len, None);
        }
        let rest = values.split_off(head_len);
        let head = StatsReply::from_values(values).map_err(StoreError::Protocol)?;
        match head.status.as_deref() {
            Some("ok") => {}
            Some("conflict") => {
                return Err(MeterError::IdempotencyConflict {
                    key: idempotency
                        .map(|i| i.key.as_str().to_owned())
                        .unwrap_or_default(),
                });
            }
            other => {
                return Err(StoreError::Protocol(format!("stats script status {other:?}")).into());
            }
        }
        let (stats, subscription) = parse_reply(account, rest).map_err(|e| match e {
            StoreError::Corrupt { key, detail, .. } => {
                StoreError::Protocol(format!("stats reply for {account}: {key} {detail}"))
            }
            other => other,
        })?;
        Ok(Recorded {
            replayed: head.replayed.as_deref() == Some("1"),
            outcome: StatsOutcome {
                counted: head.result.as_deref() == Some("1"),
                stats,
                subscription,
            },
        })
    }
}

/// The stats and subscription of a reply's values: the [`StatsHash`]'s,
/// the [`SubscriptionHash`]'s, then the recent conversations' JSON texts.
fn parse_reply(
    account: &AccountId,
    mut values: Vec<Option<String>>,
) -> Result<(Stats, Option<Subscription>), StoreError> {
    let (stats_len, sub_len) = (StatsHash::NAMES.len(), SubscriptionHash::NAMES.len());
    if values.len() < stats_len + sub_len {
        return Err(StoreError::Protocol(format!(
            "stats reply for {account}: short"
        )));
    }
    let recent = values.split_off(stats_len + sub_len);
    let sub = values.split_off(stats_len);
    values.extend(recent);
    let stats = parse_stats(account, values)?;
    let subscription = parse_subscription(
        account,
        SubscriptionHash::from_values(sub).map_err(StoreError::Protocol)?,
    )?;
    Ok((stats, subscription))
}

/// The stats of a [`StatsHash`]'s values followed by the recent
/// conversations' JSON texts.
fn parse_stats(account: &AccountId, mut values: Vec<Option<String>>) -> Result<Stats, StoreError> {
    let len = StatsHash::NAMES.len();
    if values.len() < len {
        return Err(StoreError::Protocol(format!(
            "stats of {account}: short reply"
        )));
    }
    let recent = values.split_off(len);
    let hash = StatsHash::from_values(values).map_err(StoreError::Protocol)?;
    let key = || keys::stats(account);
    let corrupt = |field: &str, value: &str| StoreError::Corrupt {
        what: format!("stats of account {account}"),
        key: key(),
        detail: format!("field {field} holds {value:?}"),
    };
    let count = |field: &str, value: &Option<String>| {
        value.as_deref().map_or(Ok(0), |text| {
            parse_count(text).ok_or_else(|| corrupt(field, text))
        })
    };
    let mood_tenths = hash
        .mood_score
        .as_deref()
        .map(|text| {
            text.split_once('.')
                .filter(|(whole, tenth)| tenth.len() == 1 && !whole.is_empty())
                .and_then(|(whole, tenth)| Some((parse_count(whole)?, parse_count(tenth)?)))
                .map(|(whole, tenth)| whole * 10 + tenth)
                .filter(|tenths| *tenths <= 100)
                .ok_or_else(|| corrupt("moodScore", text))
        })
        .transpose()?;
    let last_login_date = hash
        .last_login_date
        .as_deref()
        .map(|text| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .filter(|d| d.format("%Y-%m-%d").to_string() == text)
                .ok_or_else(|| corrupt("lastLoginDate", text))
        })
        .transpose()?;
    let recent = recent
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let text = text.as_deref().unwrap_or_default();
            parse_conversation(text).ok_or_else(|| StoreError::Corrupt {
                what: format!("recent conversations of account {account}"),
                key: keys::stats_recent(account),
                detail: format!("entry {i} holds {text:?}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Stats {
        conversations: count("conversations", &hash.conversations)?,
        mood_tenths,
        days_active: count("daysActive", &hash.days_active)?,
        login_streak: count("loginStreak", &hash.login_streak)?,
        longest_streak: count("longestStreak", &hash.longest_streak)?,
        last_login_date,
        recent,
    })
}

/// A recent conversation's JSON: `{"id", "title", "summary", "time"}`.
fn parse_conversation(text: &str) -> Option<Conversation> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let field = |name: &str| value.get(name)?.as_str().map(str::to_owned);
    Some(Conversation {
        id: field("id")?,
        title: field("title")?,
        summary: field("summary")?,
        time: parse_time(&field("time")?)?,
    })
}

impl StatsStore for RedisStats {
    async fn stats(
        &self,
        account: &AccountId,
        _now: Timestamp,
    ) -> Result<(Stats, Option<Subscription>), StoreError> {
        let keys = [
            keys::stats(account),
            keys::stats_recent(account),
            keys::stats_seen(account),
            keys::subscription(account),
        ];
        let reply = self.store.run_raw(GET.call(&keys)).await?;
        let protocol = || StoreError::Protocol(format!("stats/get.lua reply for {account}"));
        let texts = |value: &Value| -> Result<Vec<Option<String>>, StoreError> {
            let Value::Array(values) = value else {
                return Err(protocol());
            };
            values
                .iter()
                .map(|v| text(v).map_err(|()| protocol()))
                .collect()
        };
        let Value::Array(parts) = reply else {
            return Err(protocol());
        };
        let [hash, recent, subscription] = &parts[..] else {
            return Err(protocol());
        };
        let mut values = texts(hash)?;
        values.extend(texts(recent)?);
        let stats = parse_stats(account, values)?;
        let subscription = parse_subscription(
            account,
            SubscriptionHash::from_values(texts(subscription)?).map_err(StoreError::Protocol)?,
        )?;
        Ok((stats, subscription))
    }

    async fn record_login(
        &self,
        request: &RecordLogin,
        now: Timestamp,
    ) -> Result<Recorded<LoginOutcome>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let call = self
            .call(&LOGIN, &request.account, idempotency, now)
            .arg(request.day.to_string())
            .arg(request.before.to_string());
        let recorded = self.run(call, &request.account, idempotency).await?;
        Ok(recorded.map(|o| LoginOutcome {
            first_login_today: o.counted,
            days_active: o.stats.days_active,
            login_streak: o.stats.login_streak,
            longest_streak: o.stats.longest_streak,
        }))
    }

    async fn record_conversation(
        &self,
        request: &RecordConversation,
        now: Timestamp,
    ) -> Result<Recorded<StatsOutcome>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let c = &request.conversation;
        let call = self
            .call(&CONVERSATION, &request.account, idempotency, now)
            .arg(c.id.as_str())
            .arg(c.title.as_str())
            .arg(c.summary.as_str())
            .arg(c.time.to_string())
            .arg(request.keep);
        self.run(call, &request.account, idempotency).await
    }

    async fn set_mood(
        &self,
        request: &SetMood,
        now: Timestamp,
    ) -> Result<Recorded<StatsOutcome>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let call = self
            .call(&MOOD, &request.account, idempotency, now)
            .arg(request.tenths);
        self.run(call, &request.account, idempotency).await
    }

    async fn reset(
        &self,
        request: &ResetStats,
        now: Timestamp,
    ) -> Result<Recorded<StatsOutcome>, MeterError> {
        let idempotency = request.idempotency.as_ref();
        let call = self.call(&RESET, &request.account, idempotency, now);
        self.run(call, &request.account, idempotency).await
    }
}
