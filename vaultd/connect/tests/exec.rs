//! The exec hook with real programs (shell scripts in a temp dir): the
//! value arrives on stdin only, never in argv or the environment; exit
//! codes map to applied, accepted, rejected and errors; a hook that hangs
//! is killed at its timeout; stderr words never carry the value.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use vault_connect::{ExecHook, Verdict};
use vault_core::secret::SecretBytes;

fn hook(dir: &Path, body: &str, timeout: Duration) -> ExecHook {
    let p = dir.join("hook.sh");
    std::fs::write(&p, format!("#!/bin/sh\nd='{}'\n{body}", dir.display())).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    ExecHook {
        program: p,
        args: vec!["--target".into(), "db7".into()],
        timeout,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const TARGET: &str = r#"
a="$2"; [ "$1" = "--target" ] || exit 9
a="$3"
printf '%s\n' "$@" > "$d/argv.$a"
env > "$d/env.$a"
cat > "$d/stdin.$a"
case "$a" in
  apply)
    if grep -q refuse "$d/stdin.apply"; then echo "will not set $(cat "$d/stdin.apply")" >&2; exit 3; fi
    cp "$d/stdin.apply" "$d/current" ;;
  verify) cmp -s "$d/stdin.verify" "$d/current" && exit 0; exit 1 ;;
  end-sessions) echo ended >> "$d/ended" ;;
  *) exit 9 ;;
esac
"#;

#[test]
fn the_value_goes_on_stdin_only_and_exit_codes_decide() {
    let dir = tempfile::tempdir().unwrap();
    let h = hook(dir.path(), TARGET, Duration::from_secs(10));
    let rt = rt();
    let v = SecretBytes::new(b"Val-9f2e-secret".to_vec());
    rt.block_on(h.apply(&v)).unwrap();
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    assert_eq!(
        read("stdin.apply"),
        "Val-9f2e-secret",
        "exactly the value, then EOF"
    );
    assert_eq!(read("argv.apply"), "--target\ndb7\napply\n");
    assert!(
        !read("env.apply").contains("Val-9f2e"),
        "the value in the environment"
    );
    assert!(read("env.apply").contains("VAULT_HOOK_ACTION=apply"));
    assert!(
        !read("env.apply").contains("HOME="),
        "the environment is cleared"
    );
    assert_eq!(rt.block_on(h.verify(&v)).unwrap(), Verdict::Accepted);
    let other = SecretBytes::new(b"other".to_vec());
    assert_eq!(rt.block_on(h.verify(&other)).unwrap(), Verdict::Rejected);
    rt.block_on(h.end_sessions()).unwrap();
    assert_eq!(read("ended"), "ended\n");
    assert_eq!(read("stdin.end-sessions"), "", "no value for end-sessions");

    // A refusal: the hook's words, without the value it echoed.
    let bad = SecretBytes::new(b"refuse-Xq7".to_vec());
    let e = rt.block_on(h.apply(&bad)).unwrap_err();
    assert_eq!(e.code(), "target_uncertain");
    assert!(!e.changed_nothing(), "a hook may fail half-way");
    let msg = e.to_string();
    assert!(
        msg.contains("exited 3") && msg.contains("will not set [value removed]"),
        "{msg}"
    );
    assert!(!msg.contains("refuse-Xq7"));
    assert_eq!(
        rt.block_on(h.verify(&v)).unwrap(),
        Verdict::Accepted,
        "unchanged"
    );
}

#[test]
fn a_hook_that_hangs_is_killed_and_a_missing_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let h = hook(dir.path(), "exec sleep 30\n", Duration::from_millis(500));
    let rt = rt();
    let started = std::time::Instant::now();
    let e = rt
        .block_on(h.apply(&SecretBytes::new(b"v".to_vec())))
        .unwrap_err();
    assert_eq!(e.code(), "target_uncertain", "{e}");
    assert!(e.to_string().contains("killed"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(20), "not killed");
    let gone = ExecHook {
        program: dir.path().join("no-such-hook"),
        args: vec![],
        timeout: Duration::from_secs(5),
    };
    let e = rt
        .block_on(gone.verify(&SecretBytes::new(b"v".to_vec())))
        .unwrap_err();
    assert_eq!(e.code(), "target_unreachable", "{e}");
    assert!(e.changed_nothing(), "a hook that never ran");
    // A verify that exits 2 is an error, not a rejection.
    let h = hook(
        dir.path(),
        "cat >/dev/null; echo broken >&2; exit 2\n",
        Duration::from_secs(5),
    );
    let e = rt
        .block_on(h.verify(&SecretBytes::new(b"v".to_vec())))
        .unwrap_err();
    assert_eq!(e.code(), "target_uncertain", "{e}");
}
