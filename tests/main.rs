#[test]
fn nested_cargo_build_does_not_block() {
    let cargo = std::env::var("CARGO").unwrap_or("cargo".into());
    let st = std::process::Command::new(cargo).args(["build", "--release", "-p", "taskweave-rlw"]).current_dir(env!("CARGO_MANIFEST_DIR")).status().unwrap();
    assert!(st.success());
}
