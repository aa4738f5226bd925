//! What the handlers of every resource share: a row is read only through
//! its owner (another account's id is as unknown as one that does not
//! exist: 404 `{what} not found`), and a list, a single read and a delete
//! go the same way whichever table they serve.
#![forbid(unsafe_code)]

use axum::extract::Query;
use axum::http::StatusCode;
use serde_json::Value;
use sipauth_store::{Conn, FromRow, Table, WriteTx};

use super::{ApiError, ApiResult, Page, Paging, no_content, page_reply, reply};
use crate::ControlState;

/// A resource served from one store table.
pub struct Resource<T: 'static> {
    pub table: &'static Table<T>,
    /// What a 404 names it.
    pub what: &'static str,
    /// Its collection under `/v1/Account/{auth_id}/`, with the final `/`.
    pub path: &'static str,
}

// === impl Resource ===

impl<T: FromRow> Resource<T> {
    /// Row `id` if `owner` owns it, else 404.
    pub async fn row(&self, c: &mut impl Conn, owner: &str, id: &str) -> Result<T, ApiError> {
        self.table
            .get(c, owner, id)
            .await?
            .ok_or_else(|| ApiError::not_found(self.what))
    }

    /// `GET {path}`: a page of account `acct`'s rows, each shown by
    /// `object`.
    pub async fn list(
        &self,
        s: &ControlState,
        acct: &str,
        page: Query<Page>,
        object: impl Fn(&T) -> Value,
    ) -> ApiResult {
        let paging = Page::check(page)?;
        self.list_under(s, acct, acct, self.path, &paging, object)
            .await
    }

    /// A page of the rows `owner` holds, listed at `path` of account
    /// `acct`; `owner` is known to be the account's.
    pub async fn list_under(
        &self,
        s: &ControlState,
        acct: &str,
        owner: &str,
        path: &str,
        paging: &Paging,
        object: impl Fn(&T) -> Value,
    ) -> ApiResult {
        let rows = self
            .table
            .list(&s.store, owner, paging.limit, paging.offset)
            .await?;
        Ok(page_reply(acct, path, paging, &rows, object))
    }

    /// `GET {path}{id}`: row `id` of account `acct` shown by `object`.
    pub async fn get(
        &self,
        s: &ControlState,
        acct: &str,
        id: &str,
        object: impl FnOnce(&T) -> Value,
    ) -> ApiResult {
        let mut r = s.store.read().await?;
        let row = self.row(&mut r, acct, id).await?;
        Ok(reply(StatusCode::OK, object(&row)))
    }

    /// `DELETE {path}{id}`: 404 unless account `acct` owns row `id`;
    /// else `remove` (which may refuse, and then nothing changes) in the
    /// same write, and 204.
    pub async fn delete(
        &self,
        s: &ControlState,
        acct: &str,
        id: &str,
        remove: impl AsyncFnOnce(&mut WriteTx) -> Result<(), ApiError>,
    ) -> ApiResult {
        let mut w = s.store.write().await?;
        self.row(&mut w, acct, id).await?;
        remove(&mut w).await?;
        s.committed(w).await?;
        Ok(no_content())
    }
}
