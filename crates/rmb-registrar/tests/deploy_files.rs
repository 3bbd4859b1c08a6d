//! Every flag that deploy/ (systemd unit, Dockerfile) passes to `rmb-registrar` exists:
//! a renamed flag must fail here, not when an operator starts the service.

use std::path::Path;

#[test]
fn deploy_files_pass_only_real_flags() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let binary = Path::new(env!("CARGO_BIN_EXE_rmb-registrar"));
    let checked = rmb_config::deploy_files::check_binary(binary, &deploy)
        .unwrap_or_else(|problem| panic!("{problem}"));
    assert!(checked > 0, "deploy/ runs rmb-registrar somewhere");
}
