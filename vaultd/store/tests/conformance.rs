//! The storage conformance suite against the SQLite backend (a real file).

use vault_store::conformance::{exercise, Harness};
use vault_store::{Backend, Store, StoreOptions};

struct Sqlite(tempfile::TempDir);

impl Harness for Sqlite {
    fn open(&self) -> Box<dyn Backend> {
        Box::new(Store::open(&self.0.path().join("vault.db"), StoreOptions::default()).unwrap())
    }
}

#[test]
fn sqlite_passes_the_storage_conformance_suite() {
    exercise(&Sqlite(tempfile::tempdir().unwrap()));
}

#[test]
fn sqlite_passes_it_with_one_write_per_commit() {
    struct OneByOne(tempfile::TempDir);
    impl Harness for OneByOne {
        fn open(&self) -> Box<dyn Backend> {
            Box::new(
                Store::open(
                    &self.0.path().join("vault.db"),
                    StoreOptions { max_batch: 1 },
                )
                .unwrap(),
            )
        }
    }
    exercise(&OneByOne(tempfile::tempdir().unwrap()));
}
