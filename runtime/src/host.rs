//! The runtime's side of [`taskweave_plugin_api::FfiHost`]: logging and the registry.

use std::sync::Arc;

use abi_stable::std_types::{RErr, ROk, ROption, RResult, RSlice, RStr};
use taskweave_plugin_api::{
    guard, Error as ApiError, FfiFusionGrid, FfiGateMix, FfiHost, FfiMethod, FusionGrid, Host,
    LogLevel, MethodContext, Role, TensorOwned, TensorRef,
};

use crate::device::kernels;

use crate::registry::validate_method;
use crate::registry::Registry;

/// What the runtime hands to every method it creates.
#[derive(Clone)]
pub struct RuntimeHost {
    /// `None` while the registry itself is loading: plugins initialised then
    /// only log.
    registry: Option<Arc<Registry>>,
}

/// Whether `kind` with `config` (defaults filled in) is the pipeline's
/// `train.weighting` table, which `ctx` carries resolved.
fn is_pipeline_weighting(ctx: &MethodContext, kind: &str, config: &serde_json::Value) -> bool {
    let Ok(serde_json::Value::Object(mut table)) = ctx.weighting_table() else {
        return false;
    };
    table.remove("kind").is_some_and(|k| k == kind) && serde_json::Value::Object(table) == *config
}

impl RuntimeHost {
    /// A host that can only log (used while plugins load).
    pub fn logging_only() -> Host {
        Host::new(RuntimeHost { registry: None })
    }

    /// A host whose `create` builds methods from `registry`.
    pub fn with_registry(registry: Arc<Registry>) -> Host {
        Host::new(RuntimeHost {
            registry: Some(registry),
        })
    }
}

fn level_of(filter: tracing::level_filters::LevelFilter) -> LogLevel {
    use tracing::level_filters::LevelFilter;
    match filter {
        LevelFilter::TRACE => LogLevel::Trace,
        LevelFilter::DEBUG => LogLevel::Debug,
        LevelFilter::INFO => LogLevel::Info,
        LevelFilter::WARN => LogLevel::Warn,
        _ => LogLevel::Error,
    }
}

impl FfiHost for RuntimeHost {
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
        let (target, message) = (target.as_str(), message.as_str());
        match level {
            LogLevel::Error => tracing::error!(target: "plugin", source = target, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "plugin", source = target, "{message}"),
            LogLevel::Info => tracing::info!(target: "plugin", source = target, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "plugin", source = target, "{message}"),
            LogLevel::Trace => tracing::trace!(target: "plugin", source = target, "{message}"),
        }
    }

    fn max_level(&self) -> LogLevel {
        level_of(tracing::level_filters::LevelFilter::current())
    }

    fn create(
        &self,
        role: Role,
        kind: RStr<'_>,
        config: RStr<'_>,
        ctx: &MethodContext,
    ) -> RResult<FfiMethod, ApiError> {
        let Some(registry) = &self.registry else {
            return RErr(ApiError::msg(
                "methods cannot be created while plugins are loading",
            ));
        };
        let result = (|| {
            let config: serde_json::Value = serde_json::from_str(config.as_str())?;
            // A method another composes (the standard strategy's weighting)
            // refusing its config is bad input like any other: exit 2.
            let (entry, config) = validate_method(registry, role, kind.as_str(), &config)
                .map_err(|e| ApiError::input(e.to_string()))?;
            let host = RuntimeHost::with_registry(registry.clone());
            // The pipeline's own weighting, refusing what it was given: name its
            // key, so that the message points at it in the pipeline.
            let pipelines =
                role == Role::Weighting && is_pipeline_weighting(ctx, kind.as_str(), &config);
            let at = match pipelines {
                true => "train.weighting: ",
                false => "",
            };
            let created =
                registry
                    .create(entry, &config, ctx, &host)
                    .map_err(|e| match e.exit_code() {
                        2 => ApiError::input(format!("{at}{e}")),
                        _ => ApiError::msg(e.to_string()),
                    })?;
            if pipelines {
                registry.note_pipeline_weighting();
            }
            Ok(FfiMethod::new(created, &format!("method `{kind}`")))
        })();
        match result {
            Ok(method) => ROk(method),
            Err(e) => RErr(e),
        }
    }

    fn gramian(&self, grads: TensorRef<'_>) -> RResult<TensorOwned, ApiError> {
        guard("host", "gramian", || {
            Ok(kernels()
                .gramian(&grads.get())
                .map_err(ApiError::from)?
                .into())
        })
    }

    fn combine(
        &self,
        weights: TensorRef<'_>,
        grads: TensorRef<'_>,
    ) -> RResult<TensorOwned, ApiError> {
        guard("host", "combine", || {
            Ok(kernels()
                .combine(&weights.get(), &grads.get())
                .map_err(ApiError::from)?
                .into())
        })
    }

    fn fusion_grid(
        &self,
        large: TensorRef<'_>,
        small: TensorRef<'_>,
        experts: RSlice<'_, TensorRef<'_>>,
        alphas: RSlice<'_, f64>,
    ) -> RResult<FfiFusionGrid, ApiError> {
        guard("host", "fusion_grid", || {
            let experts: Vec<tch::Tensor> =
                experts.iter().map(|e| e.get().shallow_clone()).collect();
            let out =
                kernels().fusion_grid(&large.get(), &small.get(), &experts, alphas.as_slice())?;
            Ok(FusionGrid {
                log_probs: out.log_probs,
                alpha: out.alpha,
                objective: out.objective,
            }
            .into())
        })
    }

    fn gate_mix(
        &self,
        logits: TensorRef<'_>,
        experts: TensorRef<'_>,
        memory: ROption<TensorRef<'_>>,
    ) -> RResult<FfiGateMix, ApiError> {
        guard("host", "gate_mix", || {
            let memory = memory.map(|m| m.get().shallow_clone()).into_option();
            let (mixed, weights) =
                kernels().gate_mix(&logits.get(), &experts.get(), memory.as_ref())?;
            Ok(FfiGateMix {
                mixed: mixed.into(),
                weights: weights.into(),
            })
        })
    }
}
