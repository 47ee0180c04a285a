//! The audit log's in-memory Merkle tree, kept in step with the
//! `audit_log` table: loaded at open, extended by the writer only after a
//! batch has committed.

use std::sync::RwLock;

use vault_core::audit::merkle::{Hash, Tree};

pub struct AuditLog {
    tree: RwLock<Tree>,
}

impl AuditLog {
    pub(crate) fn new(tree: Tree) -> AuditLog {
        AuditLog {
            tree: RwLock::new(tree),
        }
    }

    /// (next index, leaf hash of the last entry)
    pub(crate) fn head(&self) -> (u64, Option<Hash>) {
        let t = self.read();
        let n = t.size();
        (n, n.checked_sub(1).and_then(|i| t.leaf(i)))
    }

    pub(crate) fn extend(&self, leaves: &[Hash]) {
        if leaves.is_empty() {
            return;
        }
        let mut t = self.tree.write().unwrap_or_else(|e| e.into_inner());
        for l in leaves {
            t.push(*l);
        }
    }

    /// Read access for roots and proofs.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Tree> {
        self.tree.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn size(&self) -> u64 {
        self.read().size()
    }
}
