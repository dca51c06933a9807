//! [`AccountStore`] on Redis: deleting every key of an account.

use std::sync::LazyLock;

use meter_core::{AccountId, AccountStore, StoreError};
use redis::Value;

use crate::{RedisStore, keys, script::LuaScript};

static DELETE: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "account/delete.lua",
        &[],
        &[],
        &[],
        include_str!("lua/account/delete.lua"),
    )
});

/// Index reads that race with new idempotency records before giving up.
const DELETE_TRIES: usize = 5;

/// The account store on Redis.
#[derive(Clone, Debug)]
pub struct RedisAccounts {
    store: RedisStore,
}

impl RedisAccounts {
    /// Accounts on `store`.
    pub fn new(store: RedisStore) -> Self {
        Self { store }
    }
}

impl AccountStore for RedisAccounts {
    async fn delete_account(&self, account: &AccountId) -> Result<bool, StoreError> {
        let fixed = keys::account_keys(account);
        let index = keys::idempotency_index(account);
        for attempt in 0..DELETE_TRIES {
            if attempt > 0 {
                // Idempotent calls on the account are landing meanwhile.
                tokio::time::sleep(std::time::Duration::from_millis(5 << attempt)).await;
            }
            let mut listing = redis::cmd("ZRANGE");
            listing.arg(&index).arg(0).arg(-1);
            let records: Vec<String> = match self.store.command(listing, &index).await? {
                Value::Array(items) => items
                    .into_iter()
                    .map(|item| match item {
                        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
                        _ => None,
                    })
                    .collect::<Option<_>>()
                    .ok_or_else(|| StoreError::Protocol("ZRANGE reply".into()))?,
                other => return Err(StoreError::Protocol(format!("ZRANGE reply {other:?}"))),
            };
            let mut keys = fixed.clone();
            keys.extend(records);
            let call = DELETE.call(&keys).arg(fixed.len());
            match self.store.run_raw(call).await? {
                Value::Int(existed) => return Ok(existed == 1),
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
