//! Every Redis key `meter` writes, built in one place.
//!
//! Keys of one account share the hash tag `{<account_id>}`: Redis Cluster
//! hashes only the part between the first `{` and `}`, so all of an
//! account's keys live in one slot and a script may touch several of them
//! atomically. Account ids cannot contain `{`, `}` or `:` (see
//! `meter_core::AccountId`), so a tag always ends where it should and no
//! account's keys can collide with another's.

use meter_core::{AccountId, IdempotencyKey};

/// The account's credit balance: a hash with the fields of
/// [`CreditsHash`](crate::credits::CreditsHash).
pub fn credits(account: &AccountId) -> String {
    format!("user:{{{account}}}:credits")
}

/// The account's grants: a hash of grant id to `kind|amount|left|held|created|expires`.
pub fn grants(account: &AccountId) -> String {
    format!("user:{{{account}}}:grants")
}

/// The account's open holds: a hash of hold id to
/// `amount|expires|allowance|period|grant=n,...`.
pub fn holds(account: &AccountId) -> String {
    format!("user:{{{account}}}:holds")
}

/// The account's credit history: a stream, trimmed and expiring by itself.
pub fn history(account: &AccountId) -> String {
    format!("user:{{{account}}}:history")
}

/// The account's profile: a hash with the fields of
/// [`ProfileHash`](crate::accounts::ProfileHash).
pub fn profile(account: &AccountId) -> String {
    format!("user:{{{account}}}:profile")
}

/// The account's subscription: a hash with the fields of
/// [`SubscriptionHash`](crate::accounts::SubscriptionHash).
pub fn subscription(account: &AccountId) -> String {
    format!("user:{{{account}}}:subscription")
}

/// The account's activity stats: a hash with the fields of
/// [`StatsHash`](crate::stats::StatsHash).
pub fn stats(account: &AccountId) -> String {
    format!("user:{{{account}}}:stats")
}

/// The account's recent conversations: a list of JSON objects, newest first.
pub fn stats_recent(account: &AccountId) -> String {
    format!("user:{{{account}}}:stats:recent")
}

/// The conversation ids counted since the last stats reset: a set.
pub fn stats_seen(account: &AccountId) -> String {
    format!("user:{{{account}}}:stats:seen")
}

/// The account's usage of one month or day: a hash of metric to value,
/// expiring by itself, listed in the account's index.
pub fn usage_period(account: &AccountId, period: meter_core::UsagePeriod) -> String {
    let kind = match period {
        meter_core::UsagePeriod::Month(_) => "m",
        meter_core::UsagePeriod::Day(_) => "d",
    };
    format!("user:{{{account}}}:usage:{kind}:{period}")
}

/// The period of `key` when it is one of `account`'s usage period hashes.
pub fn usage_period_of(account: &AccountId, key: &str) -> Option<meter_core::UsagePeriod> {
    let rest = key.strip_prefix(&format!("user:{{{account}}}:usage:"))?;
    let text = rest
        .strip_prefix("m:")
        .or_else(|| rest.strip_prefix("d:"))?;
    meter_core::UsagePeriod::parse("period", text).ok()
}

/// The usage event ids counted within the dedupe window: a sorted set of
/// id to when it is forgotten (ms).
pub fn usage_seen(account: &AccountId) -> String {
    format!("user:{{{account}}}:usage:seen")
}

/// The account's usage events that carried metadata: a stream, entries
/// `e` (`id|metric|value|time_ms`) and `m` (the metadata as JSON), trimmed
/// to about the most entries shown and expiring its retention after the
/// newest entry.
pub fn usage_log(account: &AccountId) -> String {
    format!("user:{{{account}}}:usage:log")
}

/// The top consumers of `metric` in `period`: a sorted set of account id
/// by usage, shared by every account (so in a slot of its own on Redis
/// Cluster), expiring with the period's usage. An account is in the
/// ranking of each metric its hash of the period ([`usage_period`]) holds.
pub fn usage_ranking(metric: &str, period: meter_core::UsagePeriod) -> String {
    format!("usage:top:{metric}:{period}")
}

/// The billing provider's customer index: the account `customer` pays
/// for and the event time of that link (a hash: `account`, `time`),
/// written when an applied subscription change or a link names the customer.
/// Shared, not an account's: a slot of its own on Redis Cluster (customer
/// ids are `A-Za-z0-9_-`, so the tag is the id).
pub fn billing_customer(customer: &str) -> String {
    format!("billing:customer:{{{customer}}}")
}

/// The billing customers linked to the account (a set of `cus_…`): the
/// index entries DeleteAccount removes, and the check that an entry is
/// still the account's when FindAccount reads it.
pub fn billing_customers(account: &AccountId) -> String {
    format!("user:{{{account}}}:billing_customers")
}

/// The account's index of idempotency records: a sorted set of their keys
/// by expiry (ms), so that every record of the account can be found without
/// scanning (DeleteAccount).
pub fn idempotency_index(account: &AccountId) -> String {
    format!("user:{{{account}}}:idempotency")
}

/// Every key of the account that is not an idempotency record; DeleteAccount
/// deletes these and the records [`idempotency_index`] lists. A service that
/// adds a key adds it here.
pub fn account_keys(account: &AccountId) -> Vec<String> {
    vec![
        credits(account),
        grants(account),
        holds(account),
        history(account),
        profile(account),
        subscription(account),
        stats(account),
        stats_recent(account),
        stats_seen(account),
        usage_seen(account),
        usage_log(account),
        billing_customers(account),
        idempotency_index(account),
    ]
}

/// The remembered outcome of one idempotent subscription call (a JSON string with a TTL).
pub fn account_idempotency(account: &AccountId, key: &IdempotencyKey) -> String {
    format!("user:{{{account}}}:idem:account:{}", key.as_str())
}

/// The remembered outcome of one idempotent stats call (a JSON string with a TTL).
pub fn stats_idempotency(account: &AccountId, key: &IdempotencyKey) -> String {
    format!("user:{{{account}}}:idem:stats:{}", key.as_str())
}

/// The remembered settlement of a hold (a JSON string with a TTL).
pub fn hold_idempotency(account: &AccountId, hold: &IdempotencyKey) -> String {
    format!("user:{{{account}}}:idem:hold:{}", hold.as_str())
}

/// The remembered outcome of one idempotent credits call (a JSON string with a TTL).
///
/// `v2`: the replies of the credit model with grants and holds, which
/// meterd versions before it cannot read (nor it theirs).
pub fn credits_idempotency(account: &AccountId, key: &IdempotencyKey) -> String {
    format!("user:{{{account}}}:idem:credits:v2:{}", key.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_account_share_its_hash_tag() {
        let account = AccountId::parse("account_id", "org_42").expect("valid");
        let key = IdempotencyKey::parse_optional("idempotency_key", "evt_1")
            .expect("valid")
            .expect("present");
        assert_eq!(credits(&account), "user:{org_42}:credits");
        let day = meter_core::UsagePeriod::parse("period", "2026-12-31").expect("day");
        let month = day.month();
        for period in [day, month] {
            let key = usage_period(&account, period);
            assert_eq!(usage_period_of(&account, &key), Some(period), "{key}");
        }
        let other = AccountId::parse("account_id", "org_4").expect("valid");
        assert_eq!(usage_period_of(&other, &usage_period(&account, day)), None);
        assert_eq!(usage_period_of(&account, &usage_seen(&account)), None);
        assert_eq!(
            credits_idempotency(&account, &key),
            "user:{org_42}:idem:credits:v2:evt_1"
        );
    }
}
