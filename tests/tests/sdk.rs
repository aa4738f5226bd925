//! Plivo's Python SDK (from PyPI, in a virtualenv the test makes) drives
//! the API of a real `sipauth control`: applications (with the List
//! Application `app_name` filter), endpoints (with their registration
//! fields), Make Call and the call record, and an error as the SDK's own
//! exception.

use std::path::Path;
use std::process::Command;

use sipauth_tests::control::Control;

/// The SDK release the API is checked against.
const PLIVO_SDK: &str = "4.63.0";

#[test]
fn plivo_python_sdk_works_against_the_api() {
    let venv =
        sipauth_tests::openapi::venv(Path::new(env!("CARGO_TARGET_TMPDIR")), "plivo", PLIVO_SDK);
    let control = Control::start(None, "");
    let a = &control.accounts[0];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/plivo_sdk.py");
    let out = Command::new(venv.join("bin/python"))
        .arg(&script)
        .args([&control.base, &a.auth_id, &a.auth_token])
        .output()
        .expect("run the SDK script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the SDK script failed:\n{text}\n{}",
        control.log()
    );
    assert!(
        text.contains("applications, endpoints and calls ok"),
        "{text}"
    );
}
