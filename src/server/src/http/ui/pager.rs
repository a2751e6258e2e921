//! Pages of the lists on a page, by the same keyset cursors as the API:
//! list `L` starts where the query's `L_after` (older than) or `L_before`
//! (newer than) says, and its links move only it; the other lists of the
//! page stay where they are.

use axum::http::StatusCode;

use super::UiError;
use crate::service::lists::{Page, PageAt};
use crate::store::requests::Cursor;

/// Links to the pages beside a list's page; each empty when there is none.
pub struct Pager {
    /// The page of newer entries.
    pub newer: String,
    /// The page of older entries.
    pub older: String,
    /// The first page, when this is not it.
    pub newest: String,
}

impl Pager {
    /// Whether there is any link to show.
    pub fn any(&self) -> bool {
        !(self.newer.is_empty() && self.older.is_empty() && self.newest.is_empty())
    }
}

/// A page's query string, as pairs.
pub(super) struct PageQuery {
    path: &'static str,
    pairs: Vec<(String, String)>,
}

impl PageQuery {
    /// The query `pairs` of the page at `path`.
    pub(super) fn new(path: &'static str, pairs: Vec<(String, String)>) -> Self {
        Self { path, pairs }
    }

    /// The raw query string of the page at `path` (read leniently: a page never fails on a
    /// malformed query; a malformed cursor is refused by [`PageQuery::at`]).
    pub(super) fn raw(path: &'static str, query: Option<&str>) -> Self {
        let pairs = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
        Self::new(path, pairs)
    }

    /// Where list `list` starts.
    pub(super) fn at(&self, list: &str) -> Result<PageAt, UiError> {
        let (after, before) = (format!("{list}_after"), format!("{list}_before"));
        let parse = |v: &str| {
            v.parse::<Cursor>()
                .map_err(|e| UiError::new(StatusCode::BAD_REQUEST, e))
        };
        for (k, v) in &self.pairs {
            if *k == after {
                return Ok(PageAt::After(parse(v)?));
            }
            if *k == before {
                return Ok(PageAt::Before(parse(v)?));
            }
        }
        Ok(PageAt::Newest)
    }

    /// The links of list `list` showing `page`.
    pub(super) fn pager(&self, list: &str, page: &Page) -> Pager {
        let first = self.at(list).map_or(true, |at| at == PageAt::Newest);
        Pager {
            newer: page
                .prev
                .map(|c| self.link(list, Some(("before", c))))
                .unwrap_or_default(),
            older: page
                .next
                .map(|c| self.link(list, Some(("after", c))))
                .unwrap_or_default(),
            newest: if first {
                String::new()
            } else {
                self.link(list, None)
            },
        }
    }

    /// This page with list `list` at `to` (its first page without).
    fn link(&self, list: &str, to: Option<(&str, Cursor)>) -> String {
        let (after, before) = (format!("{list}_after"), format!("{list}_before"));
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.pairs {
            if *k != after && *k != before {
                q.append_pair(k, v);
            }
        }
        if let Some((dir, c)) = to {
            q.append_pair(&format!("{list}_{dir}"), &c.to_string());
        }
        let q = q.finish();
        if q.is_empty() {
            self.path.to_owned()
        } else {
            format!("{}?{q}", self.path)
        }
    }
}
