//! The behaviour every [`AccountStore`] must show, with the credit ledger
//! of the same store, run by [`account_store_contract!`](crate::account_store_contract).

use std::{future::Future, time::Duration};

use meter_core::{
    AccountStore, CreditLedger, CreditPeriod, GrantCredits, GrantKind, HistoryQuery,
    IdempotencyWindow, Reason, ReserveCredits, ResetCredits, ResetTo, Timestamp,
};

use super::{account, deduct, key};
use crate::timestamp as at;

/// Runs every account-store contract test against the `(ledger, accounts,
/// guard)` that `$make` (an async block over the [`IdempotencyWindow`]
/// `$window`) yields.
#[macro_export]
macro_rules! account_store_contract {
    ($window:ident => $make:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn deleting_an_account_removes_all_it_had_and_nothing_else() {
            $crate::contract::accounts::deleting_an_account_removes_all_it_had_and_nothing_else(
                |$window: ::meter_core::IdempotencyWindow| $make,
            )
            .await;
        }

        $crate::account_store_contract!(@subscription $window => $make;
            an_account_lives_from_sign_up_to_free_again,
            older_billing_events_never_roll_a_subscription_back,
            the_status_decides_the_allowance,
            concurrent_sign_ups_create_one_account,
            profiles_change_field_by_field_and_bad_input_writes_nothing,
            billing_events_as_they_really_come,
            renewals_and_switches_never_give_a_second_allowance,
            billing_customers_lead_to_their_account_until_it_is_deleted,
        );
    };
    (@subscription $window:ident => $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::contract::subscription::$name(
                    |$window: ::meter_core::IdempotencyWindow| $make,
                )
                .await;
            }
        )*
    };
}

const NOW: &str = "2026-03-10T12:00:00.000Z";

/// After credits, a grant, a hold, history and idempotent calls, deleting
/// the account leaves it unknown: zero balance, no history, and its
/// idempotency keys forgotten. Deleting again says it had no credits; the
/// account beside it keeps everything.
pub async fn deleting_an_account_removes_all_it_had_and_nothing_else<L, A, G, F, Fut>(make: F)
where
    L: CreditLedger,
    A: AccountStore,
    F: Fn(IdempotencyWindow) -> Fut,
    Fut: Future<Output = (L, A, G)>,
{
    let window = IdempotencyWindow::new(Duration::from_secs(3600)).expect("valid");
    let (ledger, accounts, _guard) = make(window).await;
    let now = at(NOW);
    let (gone, kept) = (account("u-gone"), account("u-kept"));
    for who in [&gone, &kept] {
        let reset = ResetCredits {
            account: who.clone(),
            to: ResetTo::Fixed {
                total: 100,
                period: CreditPeriod::Month,
            },
            idempotency: None,
        };
        ledger.reset(&reset, now).await.expect("reset");
        let pack = GrantCredits::new(
            who.clone(),
            50,
            Reason::default(),
            GrantKind::Paid,
            None,
            key("pack-1"),
            Timestamp::EPOCH,
        )
        .expect("valid grant");
        ledger.grant(&pack, now).await.expect("grant");
        ledger
            .deduct(&deduct(who, 120, "msg-1"), now)
            .await
            .expect("deduct");
        let hold = ReserveCredits::new(deduct(who, 10, "call-1"), Duration::from_secs(60));
        ledger.reserve(&hold, now).await.expect("reserve");
    }
    assert!(accounts.delete_account(&gone).await.expect("delete"));
    let balance = ledger.balance(&gone, now).await.expect("read");
    assert_eq!(balance, Default::default(), "an unknown account again");
    let history = ledger
        .history(&gone, &HistoryQuery::parse(0, "").expect("query"), now)
        .await
        .expect("history");
    assert!(history.entries.is_empty());
    assert!(
        !accounts.delete_account(&gone).await.expect("delete again"),
        "nothing left to delete"
    );
    let again = ledger
        .deduct(&deduct(&gone, 120, "msg-1"), now)
        .await
        .expect("deduct");
    assert!(
        !again.replayed && !again.outcome.applied,
        "the key is forgotten: a new call, on an account with nothing"
    );
    assert!(
        !accounts
            .delete_account(&gone)
            .await
            .expect("delete the new record"),
        "no credits, though a record of the declined call was deleted"
    );
    let forgotten = ledger
        .deduct(&deduct(&gone, 120, "msg-1"), now)
        .await
        .expect("deduct");
    assert!(!forgotten.replayed, "that record went too");
    let beside = ledger.balance(&kept, now).await.expect("read");
    assert_eq!((beside.remaining(), beside.held), (20, 10));
    let replay = ledger
        .deduct(&deduct(&kept, 120, "msg-1"), now)
        .await
        .expect("deduct");
    assert!(replay.replayed, "the other account's keys are kept");
}
