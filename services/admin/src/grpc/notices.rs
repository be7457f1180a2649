//! `SystemNoticeService` over gRPC: who may send (an owner or admin, or a credential with the
//! `notices.send` scope), request validation, and the notices in force for the caller.

use std::sync::Arc;

use guardyn_common::auth::{AuthContext, CredentialScope, Role, TokenScope};
use guardyn_common::events::notices::NoticeSeverity;
use guardyn_common::wire::millis;
use guardyn_common::{AccountId, ApiError, caller};
use guardyn_proto::guardyn::admin::v1::system_notice_service_server::{
    SystemNoticeService, SystemNoticeServiceServer,
};
use guardyn_proto::guardyn::admin::v1::{
    ListSystemNoticesRequest, ListSystemNoticesResponse, SendSystemNoticeRequest,
    SendSystemNoticeResponse,
};
use tonic::{Request, Response, Status};

use crate::core::Core;
use crate::notices::{MAX_ACCOUNTS, NewNotice};
use crate::notices_store::Cursor;

/// The SystemNoticeService implementation.
#[derive(Debug, Clone)]
pub struct SystemNoticeApi {
    core: Arc<Core>,
}

pub(crate) fn system_notice_server(core: Arc<Core>) -> SystemNoticeServiceServer<SystemNoticeApi> {
    SystemNoticeServiceServer::new(SystemNoticeApi { core })
}

const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

/// The sender the audit log names, once the caller is admitted: a credential (the auth layer
/// let it reach this method only with the `notices.send` scope; checked again here, so a
/// credential is never admitted by its role) as `credential:<id>`, otherwise an owner or admin
/// account.
fn sender(who: &AuthContext) -> Result<String, ApiError> {
    match who.scope {
        TokenScope::Credential(scopes) if scopes.contains(CredentialScope::NoticesSend) => {
            Ok(who.session_id.clone())
        }
        TokenScope::Credential(_) => Err(ApiError::permission_denied(
            "the credential's scopes do not admit this method",
        )),
        _ => {
            who.require_role(Role::MANAGE)?;
            Ok(who.account_id.to_string())
        }
    }
}

fn accounts(ids: &[String]) -> Result<Vec<AccountId>, ApiError> {
    // Checked before parsing, so an oversized list costs no parsing.
    if ids.len() > MAX_ACCOUNTS {
        return Err(ApiError::invalid_field(
            "account_ids",
            format!("at most {MAX_ACCOUNTS} accounts"),
        ));
    }
    ids.iter()
        .enumerate()
        .map(|(i, id)| AccountId::parse_field(&format!("account_ids[{i}]"), id))
        .collect()
}

#[tonic::async_trait]
impl SystemNoticeService for SystemNoticeApi {
    async fn send_system_notice(
        &self,
        request: Request<SendSystemNoticeRequest>,
    ) -> Result<Response<SendSystemNoticeResponse>, Status> {
        let sender = sender(caller(&request)?)?;
        let r = request.get_ref();
        let new = NewNotice::parse(
            r.all_accounts,
            accounts(&r.account_ids)?,
            NoticeSeverity::from_wire(r.severity),
            &r.text,
            &r.reason,
            r.expires_at.as_ref().map(|t| millis(Some(t))),
            self.core.clock.now_ms(),
        )?;
        let notice = self.core.send_system_notice(sender, new).await?;
        Ok(Response::new(SendSystemNoticeResponse {
            notice_id: notice.id.clone(),
            notice: Some(notice.to_wire()),
        }))
    }

    async fn list_system_notices(
        &self,
        request: Request<ListSystemNoticesRequest>,
    ) -> Result<Response<ListSystemNoticesResponse>, Status> {
        let account = caller(&request)?.account_id;
        let r = request.get_ref();
        let size = match r.page_size {
            0 => DEFAULT_PAGE,
            n if n <= MAX_PAGE => n,
            _ => {
                return Err(
                    ApiError::invalid_field("page_size", format!("at most {MAX_PAGE}")).into(),
                );
            }
        };
        let cursor = match r.page_token.as_str() {
            "" => None,
            token => Some(Cursor::parse_token(token).ok_or_else(|| {
                ApiError::invalid_field("page_token", "not a token this server issued")
            })?),
        };
        let (notices, next) = self
            .core
            .system_notices_for(account, cursor, size as usize)
            .await?;
        Ok(Response::new(ListSystemNoticesResponse {
            notices: notices.iter().map(|n| n.to_wire()).collect(),
            next_page_token: next.map(|c| c.token()).unwrap_or_default(),
        }))
    }
}
