//! `meter.v1.CreditsService`.

use std::sync::Arc;

use meter_api::v1::{
    Balance, DeductRequest, DeductResponse, GetBalanceRequest, GetBalanceResponse, GrantRequest,
    GrantResponse, ResetRequest, ResetResponse, credits_service_server::CreditsService,
};
use meter_core::{
    AccountId, Charge, Clock, CreditBalance, CreditLedger, Credits, GrantCredits, IdempotencyKey,
    Reason, Timestamp,
};
use tonic::{Request, Response, Status};

use crate::status::{invalid_argument, to_status};

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

fn account(raw: &str) -> Result<AccountId, Status> {
    AccountId::parse("account_id", raw).map_err(|e| invalid_argument(&e))
}

fn idempotency_key(raw: &str) -> Result<Option<IdempotencyKey>, Status> {
    IdempotencyKey::parse_optional("idempotency_key", raw).map_err(|e| invalid_argument(&e))
}

fn reason(raw: &str) -> Result<Reason, Status> {
    Reason::parse("reason", raw).map_err(|e| invalid_argument(&e))
}

fn timestamp(ts: Timestamp) -> prost_types::Timestamp {
    let millis = ts.as_millis();
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        // In 0..1e9 by construction.
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

fn balance(account: &AccountId, balance: &CreditBalance) -> Balance {
    Balance {
        account_id: account.to_string(),
        total: balance.total,
        used: balance.used,
        remaining: balance.remaining(),
        reset_time: balance.schedule.map(|s| timestamp(s.next_reset)),
        last_update: balance.last_update.map(timestamp),
        trial: balance.trial,
    }
}

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
        let account = account(&request.account_id)?;
        let charge = Charge::parse(request.amount, &request.feature, request.quantity)
            .map_err(|e| invalid_argument(&e))?;
        let deduct = self
            .credits
            .price(
                account,
                charge,
                reason(&request.reason)?,
                idempotency_key(&request.idempotency_key)?,
            )
            .map_err(|e| invalid_argument(&e))?;
        let recorded = self.credits.deduct(&deduct).await.map_err(to_status)?;
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
        let grant = GrantCredits::new(
            account(&request.account_id)?,
            request.amount,
            reason(&request.reason)?,
            request.trial,
            idempotency_key(&request.idempotency_key)?,
        )
        .map_err(|e| invalid_argument(&e))?;
        let recorded = self.credits.grant(&grant).await.map_err(to_status)?;
        Ok(Response::new(GrantResponse {
            balance: Some(balance(&grant.account, &recorded.outcome)),
            replayed: recorded.replayed,
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
        Ok(Response::new(ResetResponse {
            balance: Some(balance(&account, &recorded.outcome)),
            replayed: recorded.replayed,
        }))
    }
}
