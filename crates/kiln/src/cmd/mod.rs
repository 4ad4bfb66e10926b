//! One module per subcommand. Each has `Args` (clap) and `async fn run(Args) -> CmdResult`.
pub mod build;
pub mod fmt;
pub mod init;
pub mod inspect;
pub mod port;
pub mod sandbox;
pub mod validate;
