//! Core enums stored as their text: [`Text`] is their `ToSql`/`FromSql`.
//! A stored value that is none of the enum's strings is a
//! [`StoreError::Corrupt`](crate::StoreError::Corrupt) row, never acted on.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use vault_core::custodian::approval::Decision;
use vault_core::custodian::request::{RequestKind, RequestStatus};
use vault_core::policy::Role;

/// An enum whose stored form is a fixed string.
pub trait StoredText: Sized + Copy {
    /// What the column holds, for the error.
    const WHAT: &'static str;
    fn stored(self) -> &'static str;
    fn from_stored(s: &str) -> Option<Self>;
}

macro_rules! stored_text {
    ($($t:ty, $what:literal;)+) => {$(
        impl StoredText for $t {
            const WHAT: &'static str = $what;
            fn stored(self) -> &'static str {
                self.as_str()
            }
            fn from_stored(s: &str) -> Option<Self> {
                <$t>::parse(s)
            }
        }
    )+};
}

stored_text! {
    RequestKind, "request kind";
    RequestStatus, "request status";
    Decision, "vote decision";
    Role, "principal role";
}

/// A [`StoredText`] value as a SQL text column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Text<T>(pub T);

impl<T: StoredText> ToSql for Text<T> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0.stored()))
    }
}

impl<T: StoredText> FromSql for Text<T> {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = v.as_str()?;
        T::from_stored(s).map(Text).ok_or_else(|| {
            FromSqlError::Other(Box::new(UnknownValue {
                what: T::WHAT,
                // Stored control-plane values are short names; keep the
                // message short whatever the row holds.
                value: s.chars().take(32).collect(),
            }))
        })
    }
}

/// A stored enum column whose value this build does not know.
#[derive(Debug, thiserror::Error)]
#[error("{what} {value:?} is not one this build knows")]
pub struct UnknownValue {
    what: &'static str,
    value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_values_are_corrupt() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (v TEXT)").unwrap();
        for k in RequestStatus::ALL {
            c.execute("DELETE FROM t", []).unwrap();
            c.execute("INSERT INTO t VALUES (?1)", [Text(k)]).unwrap();
            let s: String = c.query_row("SELECT v FROM t", [], |r| r.get(0)).unwrap();
            assert_eq!(s, k.as_str());
            let back: Text<RequestStatus> =
                c.query_row("SELECT v FROM t", [], |r| r.get(0)).unwrap();
            assert_eq!(back.0, k);
        }
        c.execute("UPDATE t SET v = 'superuser'", []).unwrap();
        let e = c
            .query_row("SELECT v FROM t", [], |r| r.get::<_, Text<Role>>(0))
            .unwrap_err();
        let e = crate::StoreError::from(e);
        assert!(
            matches!(&e, crate::StoreError::Corrupt(m) if m.contains("principal role \"superuser\"")),
            "{e:?}"
        );
        assert_eq!(e.code(), "integrity");
    }
}
