//! One module per subcommand.

pub mod agent;
pub mod bench;
pub mod demo;
pub mod gateway;
pub mod gateways;
pub mod init;
pub mod jobs;
pub mod keygen;
pub mod nats;
pub mod policy;
pub mod pull;
pub mod sample;
pub mod view;
pub mod worker;
