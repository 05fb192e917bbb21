// `sqlx::migrate!` embeds the migrations at compile time; without this, a new migration file
// would not rebuild the crate and binaries would run an old schema.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
