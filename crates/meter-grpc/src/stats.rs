//! `meter.v1.StatsService`.

use std::sync::Arc;

use meter_api::v1::{
    self, GetStatsRequest, GetStatsResponse, RecentConversation, RecordConversationRequest,
    RecordConversationResponse, RecordLoginRequest, RecordLoginResponse, ResetStatsRequest,
    ResetStatsResponse, SetMoodRequest, SetMoodResponse, stats_service_server::StatsService,
};
use meter_core::{AccountId, ActivityStats, Clock, StatsStore, StatsView};
use tonic::{Request, Response, Status};

use crate::{
    credits::{account, from_timestamp, idempotency_key, timestamp},
    status::to_status,
};

/// The StatsService over an [`ActivityStats`] use-case object.
#[derive(Debug)]
pub struct StatsGrpc<S, C> {
    stats: Arc<ActivityStats<S, C>>,
}

impl<S, C> StatsGrpc<S, C> {
    /// Serves `stats`.
    pub fn new(stats: Arc<ActivityStats<S, C>>) -> Self {
        Self { stats }
    }
}

fn stats_message(account: &AccountId, view: StatsView) -> v1::Stats {
    let stats = view.stats;
    let tenths = stats.mood_tenths.unwrap_or(0);
    v1::Stats {
        account_id: account.to_string(),
        conversations: stats.conversations,
        // Tenths in 0..=100: exact as an f64 divided by 10 prints.
        #[allow(clippy::cast_precision_loss)]
        mood_score: tenths as f64 / 10.0,
        days_active: stats.days_active,
        login_streak: stats.login_streak,
        longest_streak: stats.longest_streak,
        last_login_date: stats
            .last_login_date
            .map(|d| d.to_string())
            .unwrap_or_default(),
        recent_conversations: stats
            .recent
            .into_iter()
            .map(|c| RecentConversation {
                conversation_id: c.id,
                title: c.title,
                summary: c.summary,
                time: Some(timestamp(c.time)),
            })
            .collect(),
        plan: view.plan,
        mood_set: stats.mood_tenths.is_some(),
    }
}

fn optional_time(
    field: &'static str,
    ts: Option<&prost_types::Timestamp>,
) -> Result<Option<meter_core::Timestamp>, Status> {
    ts.map(|ts| from_timestamp(field, ts)).transpose()
}

#[tonic::async_trait]
impl<S: StatsStore, C: Clock> StatsService for StatsGrpc<S, C> {
    async fn get_stats(
        &self,
        request: Request<GetStatsRequest>,
    ) -> Result<Response<GetStatsResponse>, Status> {
        let who = account(&request.into_inner().account_id)?;
        let view = self
            .stats
            .get(&who)
            .await
            .map_err(|e| to_status(e.into()))?;
        Ok(Response::new(GetStatsResponse {
            stats: Some(stats_message(&who, view)),
        }))
    }

    async fn record_login(
        &self,
        request: Request<RecordLoginRequest>,
    ) -> Result<Response<RecordLoginResponse>, Status> {
        let request = request.into_inner();
        let who = account(&request.account_id)?;
        let key = idempotency_key(&request.idempotency_key)?;
        let time = optional_time("time", request.time.as_ref())?;
        let recorded = self
            .stats
            .record_login(who, time, &request.time_zone, key)
            .await
            .map_err(to_status)?;
        let login = recorded.outcome;
        if recorded.replayed {
            crate::observe::replayed("meter.v1.StatsService", "RecordLogin");
        }
        Ok(Response::new(RecordLoginResponse {
            first_login_today: login.first_login_today,
            days_active: login.days_active,
            login_streak: login.login_streak,
            longest_streak: login.longest_streak,
            replayed: recorded.replayed,
        }))
    }

    async fn record_conversation(
        &self,
        request: Request<RecordConversationRequest>,
    ) -> Result<Response<RecordConversationResponse>, Status> {
        let request = request.into_inner();
        let who = account(&request.account_id)?;
        let key = idempotency_key(&request.idempotency_key)?;
        let time = optional_time("time", request.time.as_ref())?;
        let recorded = self
            .stats
            .record_conversation(
                who.clone(),
                &request.conversation_id,
                &request.title,
                &request.summary,
                time,
                key,
            )
            .await
            .map_err(to_status)?;
        let (counted, view) = recorded.outcome;
        if recorded.replayed {
            crate::observe::replayed("meter.v1.StatsService", "RecordConversation");
        }
        Ok(Response::new(RecordConversationResponse {
            counted,
            stats: Some(stats_message(&who, view)),
            replayed: recorded.replayed,
        }))
    }

    async fn set_mood(
        &self,
        request: Request<SetMoodRequest>,
    ) -> Result<Response<SetMoodResponse>, Status> {
        let request = request.into_inner();
        let who = account(&request.account_id)?;
        let key = idempotency_key(&request.idempotency_key)?;
        let recorded = self
            .stats
            .set_mood(who.clone(), request.score, key)
            .await
            .map_err(to_status)?;
        if recorded.replayed {
            crate::observe::replayed("meter.v1.StatsService", "SetMood");
        }
        Ok(Response::new(SetMoodResponse {
            stats: Some(stats_message(&who, recorded.outcome)),
            replayed: recorded.replayed,
        }))
    }

    async fn reset_stats(
        &self,
        request: Request<ResetStatsRequest>,
    ) -> Result<Response<ResetStatsResponse>, Status> {
        let request = request.into_inner();
        let who = account(&request.account_id)?;
        let key = idempotency_key(&request.idempotency_key)?;
        let recorded = self
            .stats
            .reset(who.clone(), key)
            .await
            .map_err(to_status)?;
        if recorded.replayed {
            crate::observe::replayed("meter.v1.StatsService", "ResetStats");
        }
        Ok(Response::new(ResetStatsResponse {
            stats: Some(stats_message(&who, recorded.outcome)),
            replayed: recorded.replayed,
        }))
    }
}
