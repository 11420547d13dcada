//! The host: what the runtime offers every method (logging, the registry).

use abi_stable::sabi_trait;
use abi_stable::std_types::{RArc, RErr, ROption, RResult, RSlice, RStr};
use abi_stable::StableAbi;
use tch::{Kind, Tensor};

use crate::{
    Architecture, FfiMethod, MethodBox, MethodContext, Result, Role, Strategy, TensorOwned,
    TensorRef, Weighting,
};

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
    fn create(
        &self,
        role: Role,
        kind: RStr<'_>,
        config: RStr<'_>,
        ctx: &MethodContext,
    ) -> RResult<FfiMethod, crate::Error>;

    /// See [`Host::gramian`].
    fn gramian(&self, grads: TensorRef<'_>) -> RResult<TensorOwned, crate::Error>;

    /// See [`Host::combine`].
    fn combine(
        &self,
        weights: TensorRef<'_>,
        grads: TensorRef<'_>,
    ) -> RResult<TensorOwned, crate::Error>;

    /// See [`Host::fusion_grid`].
    fn fusion_grid(
        &self,
        large: TensorRef<'_>,
        small: TensorRef<'_>,
        experts: RSlice<'_, TensorRef<'_>>,
        alphas: RSlice<'_, f64>,
    ) -> RResult<FfiFusionGrid, crate::Error>;

    /// See [`Host::gate_mix`].
    #[sabi(last_prefix_field)]
    fn gate_mix(
        &self,
        logits: TensorRef<'_>,
        experts: TensorRef<'_>,
        memory: ROption<TensorRef<'_>>,
    ) -> RResult<FfiGateMix, crate::Error>;
}

/// The result of [`Host::gate_mix`] as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiGateMix {
    /// The mixture per task and token, `[T, R, d]`.
    pub mixed: TensorOwned,
    /// The gate weights per task, token and slot, `[T, R, S]`, f32.
    pub weights: TensorOwned,
}

/// The result of [`Host::fusion_grid`].
pub struct FusionGrid {
    /// Fused log-probabilities of the best candidate per row, `[B, V]`.
    pub log_probs: Tensor,
    /// The chosen coefficient per row and expert, `[B, T]` (one non-zero entry).
    pub alpha: Tensor,
    /// The objective of the chosen candidate per row, `[B]`.
    pub objective: Tensor,
}

/// [`FusionGrid`] as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiFusionGrid {
    /// See [`FusionGrid::log_probs`].
    pub log_probs: TensorOwned,
    /// See [`FusionGrid::alpha`].
    pub alpha: TensorOwned,
    /// See [`FusionGrid::objective`].
    pub objective: TensorOwned,
}

impl From<FusionGrid> for FfiFusionGrid {
    fn from(g: FusionGrid) -> Self {
        FfiFusionGrid {
            log_probs: g.log_probs.into(),
            alpha: g.alpha.into(),
            objective: g.objective.into(),
        }
    }
}

/// [`FfiHost`] as a shareable trait object.
pub type FfiHostBox = FfiHost_TO<'static, RArc<()>>;

/// A handle to the host. Cheap to clone; methods may keep it.
#[derive(Clone)]
pub struct Host(FfiHostBox);

/// The host of [`Host::standalone`].
#[derive(Clone)]
struct Standalone;

impl FfiHost for Standalone {
    fn log(&self, _: LogLevel, _: RStr<'_>, _: RStr<'_>) {}

    fn max_level(&self) -> LogLevel {
        LogLevel::Error
    }

    fn create(
        &self,
        _: Role,
        kind: RStr<'_>,
        _: RStr<'_>,
        _: &MethodContext,
    ) -> RResult<FfiMethod, crate::Error> {
        RErr(crate::Error::msg(format!(
            "a standalone host has no registry (asked for `{kind}`)"
        )))
    }

    fn gramian(&self, grads: TensorRef<'_>) -> RResult<TensorOwned, crate::Error> {
        let g = grads.get();
        crate::guard("standalone host", "gramian", || {
            // f32 for bf16/f16 input, as the host's kernels give it.
            let g = match g.kind() {
                Kind::BFloat16 | Kind::Half => g.f_to_kind(Kind::Float)?,
                _ => g.shallow_clone(),
            };
            Ok(g.f_matmul(&g.f_tr()?)?.into())
        })
    }

    fn combine(
        &self,
        weights: TensorRef<'_>,
        grads: TensorRef<'_>,
    ) -> RResult<TensorOwned, crate::Error> {
        crate::guard("standalone host", "combine", || {
            Ok(weights.get().f_matmul(&grads.get())?.into())
        })
    }

    fn fusion_grid(
        &self,
        _: TensorRef<'_>,
        _: TensorRef<'_>,
        _: RSlice<'_, TensorRef<'_>>,
        _: RSlice<'_, f64>,
    ) -> RResult<FfiFusionGrid, crate::Error> {
        RErr(crate::Error::msg("a standalone host has no fusion kernel"))
    }

    fn gate_mix(
        &self,
        logits: TensorRef<'_>,
        experts: TensorRef<'_>,
        memory: ROption<TensorRef<'_>>,
    ) -> RResult<FfiGateMix, crate::Error> {
        let (logits, experts) = (logits.get(), experts.get());
        let memory = memory.map(|m| m.get().shallow_clone()).into_option();
        crate::guard("standalone host", "gate_mix", || {
            // The definition in plain libtorch (the host's kernels check shapes).
            let weights = logits.f_softmax(-1, Kind::Float)?;
            let n = experts.size()[1];
            let on = |first, len| weights.f_narrow(-1, first, len)?.f_to_kind(experts.kind());
            let mut mixed = on(0, n)?
                .f_unsqueeze(-1)?
                .f_mul(&experts.f_unsqueeze(0)?)?
                .f_sum_dim_intlist(-2, false, experts.kind())?;
            if let Some(m) = memory {
                mixed = mixed.f_add(&on(n, 1)?.f_mul(&m)?)?;
            }
            Ok(FfiGateMix {
                mixed: mixed.into(),
                weights: weights.into(),
            })
        })
    }
}

impl Host {
    /// Wraps the runtime's implementation of [`FfiHost`].
    pub fn new(host: impl FfiHost + 'static) -> Host {
        Host(FfiHost_TO::from_ptr(
            RArc::new(host),
            abi_stable::sabi_trait::TD_Opaque,
        ))
    }

    /// A host for unit tests of a method outside the runtime: logs are dropped,
    /// [`Host::create`] fails (there is no registry), and the kernels are plain
    /// libtorch operations ([`Host::fusion_grid`] is unavailable).
    pub fn standalone() -> Host {
        Host::new(Standalone)
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
    pub fn create(
        &self,
        role: Role,
        table: &serde_json::Value,
        ctx: &MethodContext,
    ) -> Result<MethodBox> {
        let (kind, config) = crate::method::split_table(role, table)?;
        let created = self.0.create(
            role,
            kind.as_str().into(),
            config.to_string().as_str().into(),
            ctx,
        );
        Ok(MethodBox::from(created.into_result()?))
    }

    /// [`Host::create`] for a weighting.
    pub fn weighting(
        &self,
        table: &serde_json::Value,
        ctx: &MethodContext,
    ) -> Result<Box<dyn Weighting>> {
        self.create(Role::Weighting, table, ctx)?.into_weighting()
    }

    /// [`Host::create`] for a strategy.
    pub fn strategy(
        &self,
        table: &serde_json::Value,
        ctx: &MethodContext,
    ) -> Result<Box<dyn Strategy>> {
        self.create(Role::Strategy, table, ctx)?.into_strategy()
    }

    /// The Gramian `G Gᵀ` `[T, T]` of per-task gradients `grads` `[T, P]`, with
    /// the host's shared kernels (on CUDA: a custom kernel or cuBLAS, whichever
    /// the host measured faster; on CPU: libtorch). One compiled-kernel cache
    /// serves the whole process; plugins never load their own.
    pub fn gramian(&self, grads: &Tensor) -> Result<Tensor> {
        Ok(self.0.gramian(grads.into()).into_result()?.into_tensor())
    }

    /// `weightsᵀ G`: the combination `[P]` of the rows of `grads` `[T, P]` with
    /// `weights` `[T]` (or `[K, P]` for `weights` `[K, T]`), with the host's kernels.
    pub fn combine(&self, weights: &Tensor, grads: &Tensor) -> Result<Tensor> {
        Ok(self
            .0
            .combine(weights.into(), grads.into())
            .into_result()?
            .into_tensor())
    }

    /// The dynamic-logit-fusion grid (weak-to-strong fusion, Fan et al. 2024):
    /// for every row, every expert t and every coefficient a in `alphas`, the
    /// objective Σ_t [(KL(P̃‖P) − KL(Q_t‖Q))² + (KL(P‖P̃) − KL(Q‖Q_t))²] of
    /// P̃ = softmax(large + a·(expert_t − small)), keeping the best candidate.
    /// Logits are `[B, V]`; one fused kernel on CUDA.
    pub fn fusion_grid(
        &self,
        large: &Tensor,
        small: &Tensor,
        experts: &[Tensor],
        alphas: &[f64],
    ) -> Result<FusionGrid> {
        let experts: Vec<TensorRef<'_>> = experts.iter().map(TensorRef::new).collect();
        let out = self
            .0
            .fusion_grid(
                large.into(),
                small.into(),
                experts.as_slice().into(),
                alphas.into(),
            )
            .into_result()?;
        Ok(FusionGrid {
            log_probs: out.log_probs.into_tensor(),
            alpha: out.alpha.into_tensor(),
            objective: out.objective.into_tensor(),
        })
    }

    /// A mixture-of-experts gate over tokens for T tasks at once (TaskExpert,
    /// Ye & Xu, ICCV 2023): per task and token, `weights = softmax(logits)` over
    /// S slots (`logits` `[T, R, S]`, weights f32), and the mixture
    /// `[T, R, d]` = Σ_j weights_j · `experts[:, j]` over the n experts
    /// (`experts` `[R, n, d]`) plus, when S = n + 1, the last weight times the
    /// task's `memory` (`[T, R, d]`; `None` stands for zeros). Returns
    /// (mixture, weights). On CUDA without gradients (evaluation) one fused
    /// kernel reads the experts once for every task; inputs that require
    /// gradients take libtorch operations, which autograd differentiates.
    pub fn gate_mix(
        &self,
        logits: &Tensor,
        experts: &Tensor,
        memory: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let out = self
            .0
            .gate_mix(
                logits.into(),
                experts.into(),
                memory.map(TensorRef::new).into(),
            )
            .into_result()?;
        Ok((out.mixed.into_tensor(), out.weights.into_tensor()))
    }

    /// [`Host::create`] for an architecture.
    pub fn architecture(
        &self,
        table: &serde_json::Value,
        ctx: &MethodContext,
    ) -> Result<Box<dyn Architecture>> {
        self.create(Role::Architecture, table, ctx)?
            .into_architecture()
    }
}
