//! The "document row" pattern most resources share: an object stored as JSON text (`doc`)
//! under its key columns, the last of which is the object's creation-ordered `id`. Lists
//! are clustering ranges over `id` within the partition formed by the other key columns.
//!
//! Per-resource files describe their table with a [`DocTable`] and call these helpers, so
//! each of them stays a thin mapping from trait methods to keys.

use scylla::value::CqlValue;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Conn, StoreResult, from_json, to_json};
use crate::store::{ListQuery, Order, Page};

/// A table of JSON documents.
pub(super) struct DocTable {
    pub name: &'static str,
    /// Key columns in order; the last one is `id`. The others form the partition key
    /// (`id` is a clustering column), except for single-row partitions such as threads.
    pub keys: &'static [&'static str],
}

impl DocTable {
    fn key_filter(&self) -> String {
        self.keys
            .iter()
            .map(|k| format!("{k} = ?"))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    fn partition_filter(&self) -> String {
        self.keys[..self.keys.len().saturating_sub(1)]
            .iter()
            .map(|k| format!("{k} = ?"))
            .collect::<Vec<_>>()
            .join(" AND ")
    }
}

/// `partition` holds the values of every key column but `id`.
fn with_id<'a>(partition: &[&'a str], id: &'a str) -> Vec<&'a str> {
    let mut values = partition.to_vec();
    values.push(id);
    values
}

impl Conn {
    /// Inserts or replaces a document.
    pub(super) async fn doc_put<T: Serialize>(
        &self,
        t: &DocTable,
        partition: &[&str],
        id: &str,
        doc: &T,
    ) -> StoreResult<()> {
        let cql = format!(
            "INSERT INTO {} ({}, doc) VALUES ({}?)",
            self.table(t.name),
            t.keys.join(", "),
            "?, ".repeat(t.keys.len())
        );
        let mut values: Vec<String> = with_id(partition, id)
            .into_iter()
            .map(str::to_owned)
            .collect();
        values.push(to_json(doc)?);
        self.exec(&cql, values).await?;
        Ok(())
    }

    pub(super) async fn doc_get<T: DeserializeOwned>(
        &self,
        t: &DocTable,
        partition: &[&str],
        id: &str,
    ) -> StoreResult<Option<T>> {
        let cql = format!(
            "SELECT doc FROM {} WHERE {}",
            self.table(t.name),
            t.key_filter()
        );
        match self
            .first_row::<(Option<String>,)>(&cql, with_id(partition, id))
            .await?
        {
            Some((Some(doc),)) => Ok(Some(from_json(&doc)?)),
            _ => Ok(None),
        }
    }

    /// Whether the document exists (without decoding it).
    pub(super) async fn doc_exists(
        &self,
        t: &DocTable,
        partition: &[&str],
        id: &str,
    ) -> StoreResult<bool> {
        let cql = format!(
            "SELECT id FROM {} WHERE {}",
            self.table(t.name),
            t.key_filter()
        );
        Ok(self
            .first_row::<(String,)>(&cql, with_id(partition, id))
            .await?
            .is_some())
    }

    /// Deletes a document; answers whether it existed. (A read before a plain delete:
    /// `DELETE … IF EXISTS` would be a Paxos write mixed with the plain inserts.)
    pub(super) async fn doc_delete(
        &self,
        t: &DocTable,
        partition: &[&str],
        id: &str,
    ) -> StoreResult<bool> {
        let existed = self.doc_exists(t, partition, id).await?;
        if existed {
            self.doc_delete_blind(t, partition, id).await?;
        }
        Ok(existed)
    }

    /// Deletes a document without asking whether it was there.
    pub(super) async fn doc_delete_blind(
        &self,
        t: &DocTable,
        partition: &[&str],
        id: &str,
    ) -> StoreResult<()> {
        let cql = format!(
            "DELETE FROM {} WHERE {}",
            self.table(t.name),
            t.key_filter()
        );
        self.exec(&cql, with_id(partition, id)).await?;
        Ok(())
    }

    /// Deletes a whole partition (every document under `partition`).
    pub(super) async fn doc_delete_partition(
        &self,
        t: &DocTable,
        partition: &[&str],
    ) -> StoreResult<()> {
        let cql = format!(
            "DELETE FROM {} WHERE {}",
            self.table(t.name),
            t.partition_filter()
        );
        self.exec(&cql, partition.to_vec()).await?;
        Ok(())
    }

    /// The ids in a partition, ascending.
    pub(super) async fn doc_ids(
        &self,
        t: &DocTable,
        partition: &[&str],
    ) -> StoreResult<Vec<String>> {
        let cql = format!(
            "SELECT id FROM {} WHERE {}",
            self.table(t.name),
            t.partition_filter()
        );
        let mut ids = Vec::new();
        self.scan::<(String,)>(&cql, partition.to_vec(), |(id,)| {
            ids.push(id);
            true
        })
        .await?;
        Ok(ids)
    }

    /// Every document in a partition, ascending by id.
    pub(super) async fn doc_all<T: DeserializeOwned>(
        &self,
        t: &DocTable,
        partition: &[&str],
    ) -> StoreResult<Vec<T>> {
        let cql = format!(
            "SELECT doc FROM {} WHERE {}",
            self.table(t.name),
            t.partition_filter()
        );
        let mut docs = Vec::new();
        let mut bad = None;
        self.scan::<(Option<String>,)>(&cql, partition.to_vec(), |(doc,)| {
            match doc.as_deref().map(from_json::<T>) {
                Some(Ok(d)) => docs.push(d),
                Some(Err(e)) => {
                    bad = Some(e);
                    return false;
                }
                None => {}
            }
            true
        })
        .await?;
        match bad {
            Some(e) => Err(e),
            None => Ok(docs),
        }
    }

    /// One page of a partition, in `q`'s order and cursors, keeping only documents that
    /// pass `keep`. Unfiltered pages are one `LIMIT n+1` range read; filtered ones walk the
    /// range page by page until `n+1` documents passed.
    pub(super) async fn doc_list<T: DeserializeOwned>(
        &self,
        t: &DocTable,
        partition: &[&str],
        q: &ListQuery,
        keep: Option<&(dyn Fn(&T) -> bool + Sync)>,
    ) -> StoreResult<Page<T>> {
        let range = Range::of(q);
        let mut cql = format!(
            "SELECT doc FROM {} WHERE {}",
            self.table(t.name),
            t.partition_filter()
        );
        let mut values: Vec<CqlValue> = partition
            .iter()
            .map(|s| CqlValue::Text((*s).to_owned()))
            .collect();
        if let Some(lower) = range.lower {
            cql.push_str(" AND id > ?");
            values.push(CqlValue::Text(lower.to_owned()));
        }
        if let Some(upper) = range.upper {
            cql.push_str(" AND id < ?");
            values.push(CqlValue::Text(upper.to_owned()));
        }
        cql.push_str(if range.descending {
            " ORDER BY id DESC"
        } else {
            " ORDER BY id ASC"
        });
        let wanted = q.limit.saturating_add(1);
        let mut rows: Vec<T> = Vec::new();
        match keep {
            None => {
                cql.push_str(" LIMIT ?");
                values.push(CqlValue::Int(i32::try_from(wanted).unwrap_or(i32::MAX)));
                let found: Vec<(Option<String>,)> = self.rows(&cql, values).await?;
                for (doc,) in found {
                    if let Some(doc) = doc {
                        rows.push(from_json(&doc)?);
                    }
                }
            }
            Some(keep) => {
                let mut bad = None;
                self.scan::<(Option<String>,)>(&cql, values, |(doc,)| {
                    let Some(doc) = doc else { return true };
                    match from_json::<T>(&doc) {
                        Ok(d) => {
                            if keep(&d) {
                                rows.push(d);
                            }
                            rows.len() < wanted
                        }
                        Err(e) => {
                            bad = Some(e);
                            false
                        }
                    }
                })
                .await?;
                if let Some(e) = bad {
                    return Err(e);
                }
            }
        }
        Ok(Page::from_rows(rows, q.limit, range.reversed))
    }
}

/// The clustering range a list reads, and in which direction.
struct Range<'a> {
    lower: Option<&'a str>,
    upper: Option<&'a str>,
    descending: bool,
    /// Read against the requested order (a `before` cursor); `Page` flips the rows back.
    reversed: bool,
}

impl<'a> Range<'a> {
    fn of(q: &'a ListQuery) -> Range<'a> {
        let (after, before) = (q.after.as_deref(), q.before.as_deref());
        let reversed = before.is_some();
        match q.order {
            // Newest first: `after` bounds from above, `before` from below.
            Order::Desc => Range {
                lower: before,
                upper: after,
                descending: !reversed,
                reversed,
            },
            Order::Asc => Range {
                lower: after,
                upper: before,
                descending: reversed,
                reversed,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(order: Order, after: Option<&str>, before: Option<&str>) -> ListQuery {
        ListQuery {
            limit: 3,
            order,
            after: after.map(str::to_owned),
            before: before.map(str::to_owned),
        }
    }

    #[test]
    fn cursors_become_clustering_ranges() {
        let query = q(Order::Desc, Some("m5"), None);
        let r = Range::of(&query);
        assert_eq!(
            (r.lower, r.upper, r.descending, r.reversed),
            (None, Some("m5"), true, false)
        );
        let query = q(Order::Desc, None, Some("m5"));
        let r = Range::of(&query);
        assert_eq!(
            (r.lower, r.upper, r.descending, r.reversed),
            (Some("m5"), None, false, true)
        );
        let query = q(Order::Asc, Some("m5"), None);
        let r = Range::of(&query);
        assert_eq!(
            (r.lower, r.upper, r.descending, r.reversed),
            (Some("m5"), None, false, false)
        );
        let query = q(Order::Asc, None, Some("m5"));
        let r = Range::of(&query);
        assert_eq!(
            (r.lower, r.upper, r.descending, r.reversed),
            (None, Some("m5"), true, true)
        );
    }
}
