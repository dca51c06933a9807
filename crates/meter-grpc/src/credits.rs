//! `meter.v1.CreditsService`.

use std::{sync::Arc, time::Duration};

use meter_api::v1::{
    self, Allowance, Balance, CommitRequest, CommitResponse, CreditGrant, DeductRequest,
    DeductResponse, GetBalanceRequest, GetBalanceResponse, GrantRequest, GrantResponse,
    ListHistoryRequest, ListHistoryResponse, ReleaseRequest, ReleaseResponse, ReserveRequest,
    ReserveResponse, ResetRequest, ResetResponse, credits_service_server::CreditsService,
};
use meter_core::{
    AccountId, Charge, Clock, CreditBalance, CreditLedger, Credits, DeductCredits, GrantCredits,
    GrantKind, HistoryKind, HistoryQuery, IdempotencyKey, InvalidArgument, Reason, Recorded,
    SettleHold, SettleOutcome, Timestamp,
};
use tonic::{Request, Response, Status};

use crate::{
    observe,
    status::{invalid_argument, to_status},
};

/// The CreditsService over a [`Credits`] use-case object.
#[derive(Debug)]
pub struct CreditsGrpc<L, C> {
    credits: Arc<Credits<L, C>>,
}

impl<L, C> CreditsGrpc<L, C> {
    /// Serves `credits`.
    pub fn new(credits: Arc<Credits<L, C>>) -> Self {
        Self { credits }
    }
}

pub(crate) fn account(raw: &str) -> Result<AccountId, Status> {
    AccountId::parse("account_id", raw).map_err(|e| invalid_argument(&e))
}

pub(crate) fn idempotency_key(raw: &str) -> Result<Option<IdempotencyKey>, Status> {
    IdempotencyKey::parse_optional("idempotency_key", raw).map_err(|e| invalid_argument(&e))
}

fn reason(raw: &str) -> Result<Reason, Status> {
    Reason::parse("reason", raw).map_err(|e| invalid_argument(&e))
}

pub(crate) fn timestamp(ts: Timestamp) -> prost_types::Timestamp {
    let millis = ts.as_millis();
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        // In 0..1e9 by construction.
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// A request's timestamp, to the millisecond, within 1970..=9999.
pub(crate) fn from_timestamp(
    field: &'static str,
    ts: &prost_types::Timestamp,
) -> Result<Timestamp, Status> {
    let millis = ts
        .seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(ts.nanos.div_euclid(1_000_000))))
        .filter(|_| (0..1_000_000_000).contains(&ts.nanos));
    millis.and_then(Timestamp::from_millis).ok_or_else(|| {
        invalid_argument(&InvalidArgument::new(
            field,
            "must be a valid time from 1970 to 9999",
        ))
    })
}

fn grant_kind(kind: GrantKind) -> v1::GrantKind {
    match kind {
        GrantKind::Paid => v1::GrantKind::Paid,
        GrantKind::Trial => v1::GrantKind::Trial,
        GrantKind::Promotion => v1::GrantKind::Promotion,
        GrantKind::Compensation => v1::GrantKind::Compensation,
    }
}

fn history_kind(kind: HistoryKind) -> v1::HistoryKind {
    match kind {
        HistoryKind::Deduct => v1::HistoryKind::Deduct,
        HistoryKind::Grant => v1::HistoryKind::Grant,
        HistoryKind::Reset => v1::HistoryKind::Reset,
        HistoryKind::PeriodReset => v1::HistoryKind::PeriodReset,
        HistoryKind::Expire => v1::HistoryKind::Expire,
        HistoryKind::Reserve => v1::HistoryKind::Reserve,
        HistoryKind::Commit => v1::HistoryKind::Commit,
        HistoryKind::Release => v1::HistoryKind::Release,
        HistoryKind::HoldExpired => v1::HistoryKind::HoldExpired,
        HistoryKind::PlanChange => v1::HistoryKind::PlanChange,
    }
}

/// The kind a grant request asks for: `kind`, or `trial` from older clients.
fn requested_kind(kind: i32, trial: bool) -> Result<GrantKind, Status> {
    let kind = match v1::GrantKind::try_from(kind) {
        Ok(v1::GrantKind::Unspecified) if trial => GrantKind::Trial,
        Ok(v1::GrantKind::Unspecified | v1::GrantKind::Paid) => GrantKind::Paid,
        Ok(v1::GrantKind::Trial) => GrantKind::Trial,
        Ok(v1::GrantKind::Promotion) => GrantKind::Promotion,
        Ok(v1::GrantKind::Compensation) => GrantKind::Compensation,
        Err(_) => {
            return Err(invalid_argument(&InvalidArgument::new(
                "kind",
                format!("{kind} is not a GrantKind (1 paid, 2 trial, 3 promotion, 4 compensation)"),
            )));
        }
    };
    if trial && kind != GrantKind::Trial {
        return Err(invalid_argument(&InvalidArgument::new(
            "trial",
            format!("is set with kind {kind}; give one of them"),
        )));
    }
    Ok(kind)
}

pub(crate) fn balance(account: &AccountId, balance: &CreditBalance) -> Balance {
    let allowance = &balance.allowance;
    Balance {
        account_id: account.to_string(),
        total: balance.total(),
        used: balance.used(),
        remaining: balance.remaining(),
        reset_time: balance.reset_time().map(timestamp),
        last_update: balance.last_update.map(timestamp),
        trial: balance.trial(),
        held: balance.held,
        allowance: Some(Allowance {
            total: allowance.total,
            used: allowance.used,
            remaining: allowance.remaining(),
            reset_time: allowance.period_end().map(timestamp),
        }),
        grants: balance
            .grants
            .iter()
            .map(|grant| CreditGrant {
                id: grant.id.clone(),
                kind: grant_kind(grant.kind).into(),
                amount: grant.amount,
                remaining: grant.left,
                create_time: Some(timestamp(grant.created)),
                expire_time: grant.expires.map(timestamp),
            })
            .collect(),
    }
}

fn settlement(
    account: &AccountId,
    recorded: Recorded<SettleOutcome>,
) -> (Option<v1::Settlement>, Option<Balance>, bool) {
    let settled = &recorded.outcome.settlement;
    (
        Some(v1::Settlement {
            hold_id: settled.hold_id.clone(),
            committed: settled.commit,
            amount: settled.committed,
            returned: settled.returned,
        }),
        Some(balance(account, &recorded.outcome.balance)),
        recorded.replayed,
    )
}

impl<L: CreditLedger, C: Clock> CreditsGrpc<L, C> {
    /// The deduct a request's charge fields ask for, priced.
    fn charge(
        &self,
        account: AccountId,
        amount: i64,
        feature: &str,
        quantity: i64,
        reason_text: &str,
        key: &str,
    ) -> Result<DeductCredits, Status> {
        let charge = Charge::parse(amount, feature, quantity).map_err(|e| invalid_argument(&e))?;
        self.credits
            .price(account, charge, reason(reason_text)?, idempotency_key(key)?)
            .map_err(|e| invalid_argument(&e))
    }

    async fn settle(
        &self,
        account_id: &str,
        hold_id: &str,
        commit: Option<i64>,
        reason_text: &str,
    ) -> Result<(Option<v1::Settlement>, Option<Balance>, bool), Status> {
        let account = account(account_id)?;
        let request = SettleHold::new(account.clone(), hold_id, commit, reason(reason_text)?)
            .map_err(|e| invalid_argument(&e))?;
        let recorded = self
            .credits
            .settle_hold(&request)
            .await
            .map_err(to_status)?;
        Ok(settlement(&account, recorded))
    }
}

/// The service's name, as metrics label it.
const SERVICE: &str = "meter.v1.CreditsService";

#[tonic::async_trait]
impl<L: CreditLedger, C: Clock> CreditsService for CreditsGrpc<L, C> {
    async fn get_balance(
        &self,
        request: Request<GetBalanceRequest>,
    ) -> Result<Response<GetBalanceResponse>, Status> {
        let request = request.into_inner();
        let account = account(&request.account_id)?;
        let current = self.credits.balance(&account).await.map_err(to_status)?;
        Ok(Response::new(GetBalanceResponse {
            balance: Some(balance(&account, &current)),
        }))
    }

    async fn deduct(
        &self,
        request: Request<DeductRequest>,
    ) -> Result<Response<DeductResponse>, Status> {
        let request = request.into_inner();
        let deduct = self.charge(
            account(&request.account_id)?,
            request.amount,
            &request.feature,
            request.quantity,
            &request.reason,
            &request.idempotency_key,
        )?;
        let recorded = self.credits.deduct(&deduct).await.map_err(to_status)?;
        if recorded.replayed {
            observe::replayed(SERVICE, "Deduct");
        } else if recorded.outcome.applied {
            observe::credits_deducted(deduct.amount);
        }
        Ok(Response::new(DeductResponse {
            applied: recorded.outcome.applied,
            balance: Some(balance(&deduct.account, &recorded.outcome.balance)),
            replayed: recorded.replayed,
            charged: deduct.amount,
        }))
    }

    async fn grant(
        &self,
        request: Request<GrantRequest>,
    ) -> Result<Response<GrantResponse>, Status> {
        let request = request.into_inner();
        let expires = request
            .expire_time
            .as_ref()
            .map(|t| from_timestamp("expire_time", t))
            .transpose()?;
        let grant = GrantCredits::new(
            account(&request.account_id)?,
            request.amount,
            reason(&request.reason)?,
            requested_kind(request.kind, request.trial)?,
            expires,
            idempotency_key(&request.idempotency_key)?,
            self.credits.now(),
        )
        .map_err(|e| invalid_argument(&e))?;
        let recorded = self.credits.grant(&grant).await.map_err(to_status)?;
        if recorded.replayed {
            observe::replayed(SERVICE, "Grant");
        } else {
            observe::credits_granted(grant.amount);
        }
        Ok(Response::new(GrantResponse {
            balance: Some(balance(&grant.account, &recorded.outcome.balance)),
            replayed: recorded.replayed,
            grant_id: recorded.outcome.grant_id,
        }))
    }

    async fn reset(
        &self,
        request: Request<ResetRequest>,
    ) -> Result<Response<ResetResponse>, Status> {
        let request = request.into_inner();
        let account = account(&request.account_id)?;
        let key = idempotency_key(&request.idempotency_key)?;
        let recorded = self
            .credits
            .reset(account.clone(), request.total, key)
            .await
            .map_err(to_status)?;
        if recorded.replayed {
            observe::replayed(SERVICE, "Reset");
        }
        Ok(Response::new(ResetResponse {
            balance: Some(balance(&account, &recorded.outcome)),
            replayed: recorded.replayed,
        }))
    }

    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<ReserveResponse>, Status> {
        let request = request.into_inner();
        let ttl = match request.ttl {
            Some(ttl) if ttl.seconds >= 0 && (0..1_000_000_000).contains(&ttl.nanos) => {
                Duration::new(ttl.seconds.unsigned_abs(), ttl.nanos.unsigned_abs())
            }
            Some(_) => {
                return Err(invalid_argument(&InvalidArgument::new(
                    "ttl",
                    "must be a positive duration",
                )));
            }
            None => {
                return Err(invalid_argument(&InvalidArgument::new(
                    "ttl",
                    "is required: how long the hold lasts unless committed or released (e.g. \"300s\")",
                )));
            }
        };
        let charge = self.charge(
            account(&request.account_id)?,
            request.amount,
            &request.feature,
            request.quantity,
            &request.reason,
            &request.idempotency_key,
        )?;
        let (account, charged) = (charge.account.clone(), charge.amount);
        let recorded = self.credits.reserve(charge, ttl).await.map_err(to_status)?;
        if recorded.replayed {
            observe::replayed(SERVICE, "Reserve");
        } else if recorded.outcome.hold.is_some() {
            observe::hold("reserved");
        }
        let hold = recorded.outcome.hold;
        Ok(Response::new(ReserveResponse {
            applied: hold.is_some(),
            hold_id: hold.as_ref().map(|(id, _)| id.clone()).unwrap_or_default(),
            expire_time: hold.map(|(_, expires)| timestamp(expires)),
            balance: Some(balance(&account, &recorded.outcome.balance)),
            replayed: recorded.replayed,
            charged,
        }))
    }

    async fn commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        let request = request.into_inner();
        let (settlement, balance, replayed) = self
            .settle(
                &request.account_id,
                &request.hold_id,
                Some(request.amount),
                &request.reason,
            )
            .await?;
        if replayed {
            observe::replayed(SERVICE, "Commit");
        } else if let Some(settled) = &settlement {
            observe::hold("committed");
            observe::credits_deducted(settled.amount);
        }
        Ok(Response::new(CommitResponse {
            settlement,
            balance,
            replayed,
        }))
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        let request = request.into_inner();
        let (settlement, balance, replayed) = self
            .settle(&request.account_id, &request.hold_id, None, &request.reason)
            .await?;
        if replayed {
            observe::replayed(SERVICE, "Release");
        } else {
            observe::hold("released");
        }
        Ok(Response::new(ReleaseResponse {
            settlement,
            balance,
            replayed,
        }))
    }

    async fn list_history(
        &self,
        request: Request<ListHistoryRequest>,
    ) -> Result<Response<ListHistoryResponse>, Status> {
        let request = request.into_inner();
        let account = account(&request.account_id)?;
        let query = HistoryQuery::parse(request.page_size, &request.page_token)
            .map_err(|e| invalid_argument(&e))?;
        let page = self
            .credits
            .history(&account, &query)
            .await
            .map_err(|e| to_status(e.into()))?;
        Ok(Response::new(ListHistoryResponse {
            entries: page
                .entries
                .into_iter()
                .map(|(id, entry)| v1::HistoryEntry {
                    id: id.to_string(),
                    time: Some(timestamp(entry.time)),
                    kind: history_kind(entry.kind).into(),
                    amount: entry.amount,
                    change: entry.change,
                    remaining: entry.remaining,
                    idempotency_key: entry.key,
                    reason: entry.reason,
                    grant_id: entry.grant,
                    hold_id: entry.hold,
                })
                .collect(),
            next_page_token: page.next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }
}
