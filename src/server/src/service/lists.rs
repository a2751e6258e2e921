//! Lists of requests, a page at a time, newest first: narrowed in SQL (the
//! entitlements the policies might let the user approve), then decided
//! exactly request by request; a page holds `limit` of them unless the list
//! ends there, and nothing is capped out of sight.

use jit_api::RequestState;

use super::requests::RequestView;
use super::{App, ServiceError};
use crate::domain::User;
use crate::policy::Approvable;
use crate::store::requests::{self as store, Cursor, ListFilter, RequestRow};

/// Where a page starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PageAt {
    /// At the newest.
    #[default]
    Newest,
    /// Just older than this (a `next` link).
    After(Cursor),
    /// Just newer than this (a `prev` link).
    Before(Cursor),
}

/// A page of requests, and where the pages beside it start.
#[derive(Debug, Clone)]
pub struct Page {
    /// Newest first.
    pub items: Vec<RequestView>,
    /// Older ones follow: pass as `after` for the next page.
    pub next: Option<Cursor>,
    /// Newer ones come before: pass as `before` for the previous page.
    pub prev: Option<Cursor>,
}

/// Rows of a page, before their approvals are read.
struct Rows {
    items: Vec<RequestRow>,
    next: Option<Cursor>,
    prev: Option<Cursor>,
}

impl App {
    /// A page of what the caller may see, newest first: their own requests
    /// (`mine`), or also those they may decide on, or everything for
    /// auditors.
    pub async fn list_visible(
        &self,
        user: &User,
        states: Vec<RequestState>,
        mine: bool,
        at: PageAt,
        limit: i64,
    ) -> Result<Page, ServiceError> {
        let mut base = ListFilter {
            states,
            ..ListFilter::default()
        };
        // `None`: every row the statement reads is visible.
        let exact = if mine {
            base.requester_key = Some(user.key.clone());
            None
        } else if self.authorize_audit(user).is_ok() {
            None
        } else {
            let Approvable {
                entitlements,
                unconditional,
            } = self.approvable(user);
            base.entitlements_in = Some(entitlements);
            base.or_requester = Some(user.key.clone());
            Some(unconditional)
        };
        let rows = self
            .page_of(base, at, limit, |r| match &exact {
                None => true,
                Some(unconditional) => {
                    r.requester_key == user.key || self.decides(user, r, unconditional)
                }
            })
            .await?;
        self.page(rows).await
    }

    /// Whether `user` may decide on `row`: [`App::may_decide`], without a Cedar
    /// decision when the row's entitlement is one the policies let them approve
    /// whatever the request says (the list pays one partial evaluation per
    /// entitlement instead of a decision per row).
    fn decides(&self, user: &User, row: &RequestRow, unconditional: &[String]) -> bool {
        if row.requester_key == user.key {
            return false;
        }
        unconditional.contains(&row.entitlement) || self.may_decide(user, row)
    }

    /// Whether the policies might let `user` approve some request (the
    /// pages show *Approvals* only then).
    pub fn may_approve_any(&self, user: &User) -> bool {
        !self.approvable(user).entitlements.is_empty()
    }

    /// The entitlements whose requests `user` might approve (a superset of
    /// what [`App::may_decide`] allows); none when the policies cannot say.
    fn approvable(&self, user: &User) -> Approvable {
        self.policy
            .approvable(user, self.now().unix_timestamp())
            .unwrap_or_else(|denied| {
                tracing::warn!(errors = ?denied.errors, "cannot narrow the requests a user may decide on");
                Approvable::default()
            })
    }

    /// What waits for `user`'s decision: pending requests of others that
    /// they may decide on and have not decided on yet.
    fn waiting_filter(user: &User, entitlements: Vec<String>) -> ListFilter {
        ListFilter {
            states: vec![RequestState::Pending],
            entitlements_in: Some(entitlements),
            not_requester: Some(user.key.clone()),
            not_decided_by: Some(user.key.clone()),
            ..ListFilter::default()
        }
    }

    /// A page of the pending requests waiting for `user`'s decision.
    pub async fn pending_for(
        &self,
        user: &User,
        at: PageAt,
        limit: i64,
    ) -> Result<Page, ServiceError> {
        let Approvable {
            entitlements,
            unconditional,
        } = self.approvable(user);
        let base = Self::waiting_filter(user, entitlements);
        let rows = self
            .page_of(base, at, limit, |r| self.decides(user, r, &unconditional))
            .await?;
        self.page(rows).await
    }

    /// How many pending requests wait for `user`'s decision (the badge):
    /// one `COUNT` over the entitlements the policies let them approve
    /// whatever the request says, and the exact check only of requests on
    /// entitlements where the answer depends on the request.
    pub async fn waiting_count(&self, user: &User) -> Result<u64, ServiceError> {
        let Approvable {
            entitlements,
            unconditional,
        } = self.approvable(user);
        let mut n = 0;
        let depends: Vec<String> = entitlements
            .into_iter()
            .filter(|e| !unconditional.contains(e))
            .collect();
        if !unconditional.is_empty() {
            n += store::count(&self.store, &Self::waiting_filter(user, unconditional)).await?;
        }
        if !depends.is_empty() {
            let base = Self::waiting_filter(user, depends);
            let mut at = PageAt::Newest;
            loop {
                let rows = self
                    .page_of(base.clone(), at, 500, |r| self.may_decide(user, r))
                    .await?;
                n += u64::try_from(rows.items.len()).unwrap_or(u64::MAX);
                match rows.next {
                    Some(c) => at = PageAt::After(c),
                    None => break,
                }
            }
        }
        Ok(n)
    }

    fn reviews_filter(&self, user: &User) -> ListFilter {
        ListFilter {
            unreviewed_break_glass: true,
            entitlements_in: Some(self.approvable(user).entitlements),
            ..ListFilter::default()
        }
    }

    /// A page of the break-glass grants awaiting `user`'s review.
    pub async fn reviews_page(
        &self,
        user: &User,
        at: PageAt,
        limit: i64,
    ) -> Result<Page, ServiceError> {
        let rows = self
            .page_of(self.reviews_filter(user), at, limit, |r| {
                self.may_decide(user, r)
            })
            .await?;
        self.page(rows).await
    }

    /// Break-glass grants awaiting the user's review (all of them).
    pub async fn reviews_for(&self, user: &User) -> Result<Vec<RequestView>, ServiceError> {
        every_page(|at| self.reviews_page(user, at, 500)).await
    }

    /// Every one of `user`'s own requests in `states` (e.g. their active grants), newest first.
    pub async fn all_mine(
        &self,
        user: &User,
        states: &[RequestState],
    ) -> Result<Vec<RequestView>, ServiceError> {
        every_page(|at| self.list_visible(user, states.to_vec(), true, at, 500)).await
    }

    /// A page of the requests `user` has decided on, newest decision first
    /// (the cursors are the decisions' times).
    pub async fn decided_by(
        &self,
        user: &User,
        at: PageAt,
        limit: i64,
    ) -> Result<Page, ServiceError> {
        let want = usize::try_from(limit.clamp(1, 999)).unwrap_or(1);
        let (after, before) = match at {
            PageAt::Newest => (None, None),
            PageAt::After(c) => (Some(c), None),
            PageAt::Before(c) => (None, Some(c)),
        };
        let mut rows = store::decided_by(
            &self.store,
            &user.key,
            after,
            before,
            i64::try_from(want).unwrap_or(1) + 1,
        )
        .await?;
        let more = rows.len() > want;
        rows.truncate(want);
        if before.is_some() {
            rows.reverse();
        }
        let (next, prev) = ends(&rows, |(_, c)| *c, at, more);
        Ok(Page {
            items: self
                .with_approvals(rows.into_iter().map(|(r, _)| r).collect())
                .await?,
            next,
            prev,
        })
    }

    /// Up to `limit` rows of `base` that `keep` accepts, from `at`, and where
    /// the pages beside them start. Rows are read in batches until the page
    /// is full or the list ends.
    async fn page_of(
        &self,
        mut base: ListFilter,
        at: PageAt,
        limit: i64,
        keep: impl Fn(&RequestRow) -> bool,
    ) -> Result<Rows, ServiceError> {
        let want = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
        base.limit = limit.max(1).saturating_add(1);
        let backward = matches!(at, PageAt::Before(_));
        match at {
            PageAt::Newest => {}
            PageAt::After(c) => base.after = Some(c),
            PageAt::Before(c) => base.before = Some(c),
        }
        let batch = usize::try_from(base.limit).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        loop {
            let rows = store::list(&self.store, &base).await?;
            let ended = rows.len() < batch;
            for row in rows {
                let here = Some(Cursor::after(&row));
                if backward {
                    base.before = here;
                } else {
                    base.after = here;
                }
                if keep(&row) {
                    out.push(row);
                    if out.len() > want {
                        break;
                    }
                }
            }
            if out.len() > want || ended {
                break;
            }
        }
        let more = out.len() > want;
        out.truncate(want);
        if backward {
            out.reverse();
        }
        let (next, prev) = ends(&out, Cursor::after, at, more);
        Ok(Rows {
            items: out,
            next,
            prev,
        })
    }

    async fn page(&self, rows: Rows) -> Result<Page, ServiceError> {
        Ok(Page {
            items: self.with_approvals(rows.items).await?,
            next: rows.next,
            prev: rows.prev,
        })
    }

    /// The views of `rows`, their approvals read in one statement.
    async fn with_approvals(
        &self,
        rows: Vec<RequestRow>,
    ) -> Result<Vec<RequestView>, ServiceError> {
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id).collect();
        let mut approvals = store::approvals_of(&self.store, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|row| RequestView {
                approvals: approvals.remove(&row.id).unwrap_or_default(),
                target: self.describe(&row.entitlement),
                row,
            })
            .collect())
    }
}

/// The items of every page `page` gives, from the newest on.
async fn every_page<F, Fut>(mut page: F) -> Result<Vec<RequestView>, ServiceError>
where
    F: FnMut(PageAt) -> Fut,
    Fut: std::future::Future<Output = Result<Page, ServiceError>>,
{
    let mut out = Vec::new();
    let mut at = PageAt::Newest;
    loop {
        let p = page(at).await?;
        out.extend(p.items);
        match p.next {
            Some(c) => at = PageAt::After(c),
            None => return Ok(out),
        }
    }
}

/// Where the pages beside `items` (newest first, read from `at`) start:
/// older ones (`next`) and newer ones (`prev`). `more`: the read went on past
/// the page in its direction.
fn ends<T>(
    items: &[T],
    cursor: impl Fn(&T) -> Cursor,
    at: PageAt,
    more: bool,
) -> (Option<Cursor>, Option<Cursor>) {
    let newest = items.first().map(&cursor);
    let oldest = items.last().map(&cursor);
    match at {
        PageAt::Newest => (oldest.filter(|_| more), None),
        PageAt::After(_) => (oldest.filter(|_| more), newest),
        PageAt::Before(_) => (oldest, newest.filter(|_| more)),
    }
}
