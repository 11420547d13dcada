//! The host: what the runtime offers every method (logging, the registry).

use abi_stable::sabi_trait;
use abi_stable::std_types::{RArc, RResult, RStr};
use abi_stable::StableAbi;

use crate::{Architecture, FfiMethod, MethodBox, MethodContext, Result, Role, Strategy, Weighting};

/// Severity of a log record forwarded from a plugin to the host.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `tracing::Level::ERROR`.
    Error,
    /// `tracing::Level::WARN`.
    Warn,
    /// `tracing::Level::INFO`.
    Info,
    /// `tracing::Level::DEBUG`.
    Debug,
    /// `tracing::Level::TRACE`.
    Trace,
}

impl From<&tracing::Level> for LogLevel {
    fn from(level: &tracing::Level) -> Self {
        match *level {
            tracing::Level::ERROR => LogLevel::Error,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::DEBUG => LogLevel::Debug,
            tracing::Level::TRACE => LogLevel::Trace,
        }
    }
}

/// The host's services, as they cross the boundary. The runtime implements it;
/// methods use it through [`Host`].
#[sabi_trait]
pub trait FfiHost: Send + Sync + Clone {
    /// Records a log line from a plugin (`target` is the plugin module path).
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>);

    /// The most verbose level the host records; plugins skip formatting the rest.
    fn max_level(&self) -> LogLevel;

    /// Creates the method `kind` of `role` from the registry, with `config` (a
    /// JSON object, validated and completed with defaults by the host).
    #[sabi(last_prefix_field)]
    fn create(
        &self,
        role: Role,
        kind: RStr<'_>,
        config: RStr<'_>,
        ctx: &MethodContext,
    ) -> RResult<FfiMethod, crate::Error>;
}

/// [`FfiHost`] as a shareable trait object.
pub type FfiHostBox = FfiHost_TO<'static, RArc<()>>;

/// A handle to the host. Cheap to clone; methods may keep it.
#[derive(Clone)]
pub struct Host(FfiHostBox);

impl Host {
    /// Wraps the runtime's implementation of [`FfiHost`].
    pub fn new(host: impl FfiHost + Clone + 'static) -> Host {
        Host(FfiHost_TO::from_ptr(RArc::new(host), abi_stable::sabi_trait::TD_Opaque))
    }

    /// Wraps a host handle received through the ABI.
    pub fn from_ffi(host: FfiHostBox) -> Host {
        Host(host)
    }

    /// The handle to pass through the ABI.
    pub fn to_ffi(&self) -> FfiHostBox {
        self.0.clone()
    }

    /// Logs `message` at `level` on the host's subscriber.
    pub fn log(&self, level: LogLevel, target: &str, message: &str) {
        self.0.log(level, target.into(), message.into());
    }

    /// The most verbose level the host records.
    pub fn max_level(&self) -> LogLevel {
        self.0.max_level()
    }

    /// Creates another method from the registry by name: `table` is a method
    /// table (`{"kind": "pcgrad", ...}`), validated and completed by the host.
    /// This is how methods compose without linking each other.
    pub fn create(&self, role: Role, table: &serde_json::Value, ctx: &MethodContext) -> Result<MethodBox> {
        let kind = table.get("kind").and_then(|k| k.as_str()).ok_or_else(|| {
            crate::Error::msg(format!("a {role} table needs a string `kind`, got {table}"))
        })?;
        let mut config = table.clone();
        if let Some(map) = config.as_object_mut() {
            map.remove("kind");
        }
        let created = self.0.create(role, kind.into(), config.to_string().as_str().into(), ctx);
        Ok(MethodBox::from(created.into_result()?))
    }

    /// [`Host::create`] for a weighting.
    pub fn weighting(&self, table: &serde_json::Value, ctx: &MethodContext) -> Result<Box<dyn Weighting>> {
        self.create(Role::Weighting, table, ctx)?.into_weighting()
    }

    /// [`Host::create`] for a strategy.
    pub fn strategy(&self, table: &serde_json::Value, ctx: &MethodContext) -> Result<Box<dyn Strategy>> {
        self.create(Role::Strategy, table, ctx)?.into_strategy()
    }

    /// [`Host::create`] for an architecture.
    pub fn architecture(
        &self,
        table: &serde_json::Value,
        ctx: &MethodContext,
    ) -> Result<Box<dyn Architecture>> {
        self.create(Role::Architecture, table, ctx)?.into_architecture()
    }
}
